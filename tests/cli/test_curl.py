"""`mirapi curl` through the real CLI entry point, against a real upstream.

In this process (`invoke`: `main.run` with its own stdin, stdout and
environment); the exit codes are checked once more as a real process.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

from tests.support.cli import invoke
from tests.support.upstream import Upstream, drop, echo, reply

REPO = Path(__file__).resolve().parents[2]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}


async def mirapi(*args: str, stdin: bytes = b"") -> tuple[int, bytes, str]:
    """Run `mirapi ARGS` in this process; (exit code, stdout bytes, stderr text)."""
    call = asyncio.to_thread(invoke, args, environment(), stdin=stdin)
    return await asyncio.wait_for(call, 60)


async def mirapi_process(*args: str, stdin: bytes = b"") -> tuple[int, bytes, str]:
    """Run `mirapi ARGS` as a process; (exit code, stdout bytes, stderr text)."""
    env = environment()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirapi_cli.main",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out, err.decode()


async def test_get_prints_body(upstream: Upstream) -> None:
    code, out, _ = await mirapi("curl", f"{upstream.url}/v1/items?x=1")
    assert code == 0
    assert out == b'{"ok":true}'
    assert upstream.seen[0].path_qs == "/v1/items?x=1"
    assert not any(h.startswith("x-target") for h in upstream.seen[0].headers)


async def test_post_data_and_headers(upstream: Upstream) -> None:
    code, _, _ = await mirapi(
        "curl", upstream.url, "-d", "amount=2000", "-H", "Authorization: Bearer t"
    )
    assert code == 0
    seen = upstream.seen[0]
    assert seen.method == "POST"
    assert seen.body == b"amount=2000"
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.headers["authorization"] == "Bearer t"


async def test_data_binary_file_is_byte_exact(upstream: Upstream, tmp_path: Path) -> None:
    upstream.default = echo()
    payload = bytes(range(256)) * 64
    (tmp_path / "blob").write_bytes(payload)
    out_file = tmp_path / "out"
    code, out, _ = await mirapi(
        "curl",
        upstream.url,
        "-X",
        "PUT",
        "--data-binary",
        f"@{tmp_path / 'blob'}",
        "-o",
        str(out_file),
    )
    assert code == 0 and out == b""
    assert upstream.seen[0].body == payload
    assert out_file.read_bytes() == payload


async def test_retry_rescues_and_verbose_shows_attempts(upstream: Upstream) -> None:
    upstream.then(reply(503), drop())
    code, out, err = await mirapi(
        "curl", upstream.url, "--retry", "3", "--retry-delay", "10ms", "-v", "-X", "POST"
    )
    assert code == 0, err
    assert out == b'{"ok":true}'
    assert len(upstream.seen) == 3
    assert "503, retrying in" in err
    assert "reset, retrying in" in err
    assert "< x-rescued: retry" in err
    assert len({s.headers["idempotency-key"] for s in upstream.seen}) == 1


async def test_include_shows_status_and_headers(upstream: Upstream) -> None:
    code, out, _ = await mirapi("curl", upstream.url, "-i")
    assert code == 0
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"x-request-id: " in head.lower()
    assert body == b'{"ok":true}'


async def test_exit_codes_follow_curl(upstream: Upstream) -> None:
    upstream.default = reply(404)
    # What the shell sees, through the real entry point, once as a process.
    code, _, _ = await mirapi_process("curl", upstream.url, "-f", "-s")
    assert code == 22
    code, out, _ = await mirapi("curl", upstream.url)
    assert code == 0 and out == b'{"ok":true}'
    upstream.default = reply(delay=3)
    code, _, err = await mirapi("curl", upstream.url, "--timeout", "200ms")
    assert code == 28, err
    code, _, err = await mirapi(
        "curl", f"http://127.0.0.1:{_closed_port()}/", "--retry", "1", "--retry-delay", "1ms"
    )
    assert code == 7
    assert "could not be reached" in err


def _closed_port() -> int:
    """A loopback port that was bound and is now closed: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_failover(upstream: Upstream) -> None:
    upstream.then(reply(503))
    code, _, _ = await mirapi("curl", f"{upstream.url}/a", "--failover", f"{upstream.url}/b", "-i")
    assert code == 0
    assert [s.path_qs for s in upstream.seen] == ["/a", "/b"]


async def test_bad_flag_value_names_the_flag(upstream: Upstream) -> None:
    code, _, err = await mirapi("curl", upstream.url, "--timeout", "soon")
    assert code == 2
    assert "--timeout" in err and "Traceback" not in err
    assert upstream.seen == []


async def test_via_a_running_sidecar(upstream: Upstream, sidecar_url: str) -> None:
    upstream.then(reply(500))
    code, out, err = await mirapi(
        "curl",
        f"{upstream.url}/x",
        "--via",
        sidecar_url,
        "--retry",
        "1",
        "--retry-delay",
        "1ms",
        "-i",
    )
    assert code == 0, err
    assert b"x-rescued: retry" in out.lower()
    assert b"x-mirapi-attempts" not in out.lower()
    assert len(upstream.seen) == 2


async def test_via_reports_sidecar_errors_like_in_process(
    upstream: Upstream, sidecar_url: str
) -> None:
    upstream.default = drop()
    code, _, err = await mirapi("curl", upstream.url, "--via", sidecar_url)
    assert code == 7
    assert "could not be reached" in err


async def test_webhook_needs_a_sidecar_and_names_the_flag(upstream: Upstream) -> None:
    code, out, err = await mirapi("curl", upstream.url, "--webhook", "http://127.0.0.1:9/hook")
    assert code == 2
    assert "--webhook" in err and "--via" in err
    assert out == b""
    assert upstream.seen == []


async def test_webhook_through_a_sidecar_is_accepted_as_a_job(
    upstream: Upstream, sidecar_url: str
) -> None:
    code, out, err = await mirapi(
        "curl", "-i", upstream.url, "--webhook", upstream.url + "/hook", "--via", sidecar_url
    )
    assert code == 0, err
    assert out.startswith(b"HTTP/1.1 202")
    assert b'"job_id"' in out and b"/_mirapi/jobs/job_" in out


async def test_repeated_data_is_joined_as_curl_joins_it(upstream: Upstream) -> None:
    code, _, err = await mirapi("curl", upstream.url, "-d", "amount=2000", "-d", "currency=usd")
    assert code == 0, err
    assert upstream.seen[0].body == b"amount=2000&currency=usd"


async def test_follow_and_write_out_through_a_sidecar(upstream: Upstream, sidecar_url: str) -> None:
    upstream.then(reply(303, b"", headers={"Location": "/landed"}), reply(200, b"done"))
    code, out, err = await mirapi(
        "curl", "-sS", "-L", "-d", "a=1", f"{upstream.url}/start", "--via", sidecar_url,
        "-w", "\\n%{http_code} %{num_redirects} %{url_effective}\\n",
    )  # fmt: skip
    assert code == 0, err
    assert out == f"done\n200 1 {upstream.url}/landed\n".encode()
    assert [(s.method, s.path_qs, s.body) for s in upstream.seen] == [
        ("POST", "/start", b"a=1"),
        ("GET", "/landed", b""),
    ]
