"""The sidecar protects itself (issue 6, SPEC §3): a real sidecar process,
spoken to over raw sockets where httpx would not send what an attacker does.

- a foreign `Host` (DNS rebinding) is refused, on proxied and control paths;
- `Content-Length` with `Transfer-Encoding` is refused, never forwarded, and
  the connection closed;
- a body over `max_body` gets 413 without reaching the upstream;
- a client that stops sending mid-request is timed out (`read_timeout`);
- no request-target moves a request to another host, and odd bytes in a
  request line or header get a 400, never a 500 (issue 14).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cli import Cli, kill_leftover
from tests.support.upstream import Upstream, echo, start_upstream


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server, runner = await start_upstream()
    server.default = echo()
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A sidecar process with a 1 KiB body limit and a 1 s read timeout: (host, port)."""
    config = tmp_path / "config.toml"
    config.write_text('max_body = "1KiB"\nread_timeout = "1s"\nserver_names = ["sidecar.test"]\n')
    cli = Cli(tmp_path / "data", config)
    try:
        address = str(cli.start("--allow-private")["address"])
        host, _, port = address.removeprefix("http://").rpartition(":")
        yield host, int(port)
    finally:
        cli("sidecar", "stop")
        kill_leftover(cli.state_file)


async def exchange_raw(where: tuple[str, int], request: bytes, within: float = 5.0) -> bytes:
    """Send `request` as it is; everything the sidecar answers until it closes."""
    reader, writer = await asyncio.open_connection(*where)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(within):
            return await reader.read(-1)
    finally:
        writer.close()


def status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.startswith(b"{") else {}


async def test_a_foreign_host_is_refused_and_a_configured_one_served(
    sidecar: tuple[str, int], upstream: Upstream
) -> None:
    base = f"http://{sidecar[0]}:{sidecar[1]}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        target = {"X-Target-URL": upstream.url}
        refused = await http.get("/", headers={**target, "Host": "attacker.example"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "host_not_allowed"
        assert upstream.seen == []
        # The control endpoints too: a rebound page must not read jobs or health.
        probe = await http.get("/_mirapi/healthz", headers={"Host": "attacker.example"})
        assert probe.status_code == 403

        assert (
            await http.get("/", headers={**target, "Host": "sidecar.test:80"})
        ).status_code == 200
        assert (await http.get("/", headers=target)).status_code == 200  # 127.0.0.1:PORT
        assert len(upstream.seen) == 2


async def test_content_length_with_transfer_encoding_is_refused_and_not_forwarded(
    sidecar: tuple[str, int], upstream: Upstream
) -> None:
    smuggled = b"GET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n"
    chunk = b"0\r\n\r\n" + smuggled
    request = (
        b"POST / HTTP/1.1\r\nHost: localhost\r\n"
        + f"X-Target-URL: {upstream.url}\r\n".encode()
        + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk
    )
    raw = await exchange_raw(sidecar, request)
    status, body = status_and_body(raw)
    assert status == 400
    assert body["error"]["code"] == "bad_request"  # type: ignore[index]
    assert b"connection: close" in raw.lower()
    # Closed after the one answer: the smuggled request was never served.
    assert raw.count(b"HTTP/1.1 ") == 1
    assert upstream.seen == []


async def test_a_body_over_max_body_gets_413_without_an_upstream_call(
    sidecar: tuple[str, int], upstream: Upstream
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            f"http://{sidecar[0]}:{sidecar[1]}/",
            headers={"X-Target-URL": upstream.url},
            content=b"x" * 2048,
        )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert upstream.seen == []


async def test_a_client_that_stops_sending_its_body_is_timed_out(
    sidecar: tuple[str, int], upstream: Upstream
) -> None:
    began = time.monotonic()
    # Whole headers, a tenth of the body, then silence. A request under way is
    # not idle, so only the read timeout (1 s here) can end it; without one
    # the connection would stay open for good.
    request = (
        b"POST / HTTP/1.1\r\nHost: localhost\r\n"
        + f"X-Target-URL: {upstream.url}\r\n".encode()
        + b"Content-Length: 100\r\n\r\n0123456789"
    )
    raw = await exchange_raw(sidecar, request, within=10.0)
    assert time.monotonic() - began < 4.0
    assert b"HTTP/1.1 2" not in raw
    assert upstream.seen == []


async def test_request_targets_and_header_bytes_get_a_400_and_never_another_host(
    sidecar: tuple[str, int], upstream: Upstream
) -> None:
    hits: list[bytes] = []

    async def elsewhere(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits.append(await reader.read(1024))
        writer.close()

    other = await asyncio.start_server(elsewhere, "127.0.0.2", 0)
    port = other.sockets[0].getsockname()[1]
    target = f"X-Target-URL: {upstream.url}\r\n".encode()
    async with other:
        for head, code in (
            (b"GET @127.0.0.2:%d/echo HTTP/1.1\r\n" % port, "bad_request"),
            (b"GET http://127.0.0.2:%d/echo HTTP/1.1\r\n" % port, "bad_request"),
            (b"OPTIONS * HTTP/1.1\r\n", "bad_request"),
            (b"GET / HTTP/1.1\r\nAccept-Language: caf\xe9\r\n", "bad_header"),
            ("GET / HTTP/1.1\r\nX-Request-ID: r\u00e9q-1\r\n".encode(), "bad_header"),
        ):
            raw = await exchange_raw(
                sidecar, head + target + b"Host: localhost\r\nConnection: close\r\n\r\n"
            )
            status, body = status_and_body(raw)
            assert (status, body["error"]["code"]) == (400, code), head  # type: ignore[index]
    assert hits == []
    assert upstream.seen == []
