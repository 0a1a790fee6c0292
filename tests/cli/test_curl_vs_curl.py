"""`mirapi curl` against the real `curl`: same arguments, same local upstream, same result.

curl is the reference, not our reading of its manual. Each command line
in CASES runs through the real `curl` binary and through `mirapi curl`
(in-process, through the real entry point) against one recording server
on 127.0.0.1; the requests it received must be the same: method, target
(path and query), headers (repeated names kept, in order per name) and
body bytes. Left out of the comparison, by name: the default User-Agent
(curl/VERSION against mirapi/VERSION), `X-Request-ID` (the pipeline adds
it, SPEC §2.7), a multipart boundary (random in both), and the exact
`Accept-Encoding` list of `--compressed` (each names what it can decode),
and a `Content-Length: 0` on a request without a body (our HTTP client,
aiohttp, sends it for methods other than GET and HEAD; curl does not).
aiohttp also sends a method upper-case (`-X patch` goes as PATCH): the
table types methods upper-case.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
from pathlib import Path

import pytest

from tests.support.recorder import (
    BODY,
    GZIPPED,
    Seen,
    base_url,
    mirapi_curl,
    real_curl,
    recorder,
)

pytestmark = pytest.mark.skipif(
    shutil.which("curl") is None, reason="the real curl is not installed"
)

CASES: dict[str, list[str]] = {
    "-d repeated is joined with &": ["-d", "a=1", "-d", "b=2", "{url}/post"],
    "--data and --data-ascii": ["--data", "a=1", "--data-ascii", "b=2", "{url}/"],
    "-d @file strips CR and LF": ["-d", "@{dir}/lines.txt", "{url}/"],
    "-d @- reads stdin": ["-d", "@-", "{url}/"],
    "-d @missing-file sends an empty piece": ["-d", "a=1", "-d", "@/nonexistent", "{url}/"],
    "--data-raw keeps @": ["--data-raw", "@not-a-file", "{url}/"],
    "--data-binary @file keeps bytes": ["--data-binary", "@{dir}/blob.bin", "{url}/"],
    "--data-urlencode forms": [
        *("--data-urlencode", "a b&c=d", "--data-urlencode", "=x y/z"),
        *("--data-urlencode", "name=va lue/ü~", "--data-urlencode", "@{dir}/plain.txt"),
        *("--data-urlencode", "f@{dir}/plain.txt", "{url}/"),
    ],
    "data flags joined in typed order": [
        *("--data-urlencode", "q=a b", "-d", "x=1", "--data-binary", "raw", "--data-raw", "@r"),
        "{url}/",
    ],
    "--json": ["--json", '{"a": 1}', "{url}/"],
    "--json repeated": ["--json", '{"a":', "--json", " 1}", "{url}/"],
    "--json with -H Accept": ["--json", "[]", "-H", "Accept: text/plain", "{url}/"],
    "-F fields, files, type and <file": [
        *("-F", "a=1", "-F", "f=@{dir}/plain.txt", "-F", "g=@{dir}/blob.bin;type=app/x-thing"),
        *("-F", "h=<{dir}/plain.txt", "{url}/upload"),
    ],
    "-G puts the data in the query": [
        *("-G", "-d", "a=1", "--data-urlencode", "b=x y", "{url}/search?q=1"),
    ],
    "-X PUT with -d": ["-X", "PUT", "-d", "a=1", "{url}/put"],
    "-X DELETE": ["-X", "DELETE", "{url}/thing/1"],
    "-H repeated names kept": ["-H", "X-A: 1", "-H", "X-A: 2", "-H", "X-B: 3", "{url}/"],
    "-H 'Accept:' removes it": ["-H", "Accept:", "{url}/"],
    "-H 'Name;' sends it empty": ["-H", "X-Empty;", "{url}/"],
    "-H replaces the form Content-Type": ["-d", "a", "-H", "Content-Type: text/plain", "{url}/"],
    "-H 'Content-Type:' removes it": ["-d", "a", "-H", "Content-Type:", "{url}/"],
    "-u user:password": ["-u", "user:pa ss", "{url}/"],
    "user:password in the URL": ["http://u%40x:p@{host}/private"],
    "-A": ["-A", "agent/1.0", "{url}/"],
    "-H User-Agent replaces ours": ["-H", "User-Agent: x/1", "{url}/"],
    "-e": ["-e", "http://from.example/page", "{url}/"],
    "-H @file": ["-H", "@{dir}/headers.txt", "{url}/"],
    "--data-urlencode @- reads stdin": ["--data-urlencode", "s@-", "{url}/"],
    "-X PATCH": ["-X", "PATCH", "-d", "a=1", "{url}/"],
    "-G with --json-free data and a fragment": ["-G", "-d", "a=1", "{url}/path?x=1#frag"],
    "URL without a scheme": ["{host}/bare"],
    "-b string": ["-b", "a=1; b=2", "{url}/"],
    "-b cookie file": ["-b", "{dir}/cookies.txt", "{url}/cookies/x"],
    "-I is HEAD": ["-I", "{url}/"],
    "-I -G with data": ["-I", "-G", "-d", "a=1", "{url}/"],
    "--compressed": ["--compressed", "{url}/gzip"],
    "-k over http changes nothing": ["-k", "{url}/"],
    "bundled short flags": ["-sSfL", "-d", "a=1", "{url}/"],
    "attached and bundled values keep their order": [
        *("--data-urlencode", "z=1 2", "-da=1", "-sSd", "b=2", "-XPUT", "{url}/"),
    ],
    "-L 301 POST becomes GET": ["-L", "-d", "a=1", "{url}/redirect/301?to=/landed"],
    "-L 302 POST becomes GET": ["-L", "-d", "a=1", "{url}/redirect/302?to=/landed"],
    "-L 303 POST becomes GET": ["-L", "-d", "a=1", "{url}/redirect/303?to=/landed"],
    "-L 303 PUT becomes GET": ["-L", "-X", "PUT", "-d", "a=1", "{url}/redirect/303?to=/x"],
    "-L 307 keeps POST and body": ["-L", "-d", "a=1", "{url}/redirect/307?to=/landed"],
    "-L 308 keeps POST and body": ["-L", "-d", "a=1", "{url}/redirect/308?to=/landed"],
    "-L -X POST 302": ["-L", "-X", "POST", "-d", "a=1", "{url}/redirect/302?to=/landed"],
    "-L keeps -u on the same host": ["-L", "-u", "a:b", "{url}/redirect/302?to=/landed"],
    "no -L: a redirect is not followed": ["{url}/redirect/302?to=/landed"],
}
STDIN = b"x=1\r\ny=2\n"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "lines.txt").write_bytes(b"a=1\r\n&b=2\n&c=3\n")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) + b"\r\n\n end")
    (tmp_path / "plain.txt").write_bytes(b"hello world & more\n")
    (tmp_path / "headers.txt").write_bytes(b"X-From-File: 1\nX-From-File: 2\n\nAccept: text/x\n")
    return tmp_path


def _cookie_file(directory: Path) -> None:
    lines = [
        "127.0.0.1\tFALSE\t/cookies\tFALSE\t0\tseen\tyes",
        "127.0.0.1\tFALSE\t/elsewhere\tFALSE\t0\tnot\tsent",
        "other.example\tFALSE\t/\tFALSE\t0\tforeign\tno",
    ]
    (directory / "cookies.txt").write_text(
        "# Netscape HTTP Cookie File\n" + "\n".join(lines) + "\n"
    )


def _args(template: list[str], url: str, directory: Path) -> list[str]:
    host = url.removeprefix("http://")
    fields = {"{url}": url, "{dir}": str(directory), "{host}": host}
    return [_fill(a, fields) for a in template]


def _fill(arg: str, fields: dict[str, str]) -> str:
    for name, value in fields.items():
        arg = arg.replace(name, value)
    return arg


def _normal(seen: Seen, compressed: bool) -> tuple[object, ...]:
    """A request with what may differ by right (see the module's docstring) made equal."""
    headers = [(name.lower(), value) for name, value in seen.headers]
    body = seen.body
    boundary = re.search(r"boundary=(\S+)", dict(headers).get("content-type", ""))
    if boundary:
        body = body.replace(boundary.group(1).encode(), b"BOUNDARY")
    kept: list[tuple[str, str]] = []
    for name, value in headers:
        if name == "x-request-id":
            continue
        if name == "user-agent" and value.startswith(("curl/", "mirapi/")):
            value = "<default>"
        if name == "accept-encoding" and compressed:
            assert {"gzip", "deflate"} <= {v.strip() for v in value.split(",")}, value
            value = "<decodable>"
        if name == "content-length" and value == "0" and not body:
            continue  # aiohttp adds it to a body-less POST/PUT/DELETE; curl does not
        if boundary and name == "content-type":
            value = value.replace(boundary.group(1), "BOUNDARY")
        kept.append((name, value))
    return seen.method, seen.target, sorted(kept, key=lambda item: item[0]), body


@pytest.mark.parametrize("case", list(CASES))
def test_the_upstream_receives_what_curl_sends(case: str, files: Path) -> None:
    _cookie_file(files)
    compressed = "--compressed" in CASES[case]
    with recorder() as server:
        args = _args(CASES[case], base_url(server), files)
        reference = real_curl(["-s", "-o", "/dev/null", *args], stdin=STDIN)
        expected = [_normal(seen, compressed) for seen in server.seen]
        server.seen.clear()
        ours = mirapi_curl(["-s", "-o", "/dev/null", *args], stdin=STDIN)
        got = [_normal(seen, compressed) for seen in server.seen]
    assert expected, reference
    assert got == expected, ours.stderr
    assert ours.code == reference.code


def _head(block: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The status line and the headers (lower-cased, minus Date) of a `-i` block."""
    lines = block.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines[1:] if line]
    kept = [(n.lower(), v) for n, v in headers if n.lower() not in ("date", "x-request-id")]
    return lines[0], sorted(kept, key=lambda item: item[0])


@pytest.mark.parametrize(
    "args",
    [
        ["-i", "{url}/"],
        ["-I", "{url}/"],
        ["-i", "{url}/status/404"],
        ["-i", "-L", "{url}/redirect/302?to=/x"],
    ],
    ids=["-i", "-I", "-i 404", "-i -L"],
)
def test_headers_on_stdout_match_curl(args: list[str], tmp_path: Path) -> None:
    with recorder() as server:
        line = _args(args, base_url(server), tmp_path)
        reference, ours = real_curl(["-s", *line]), mirapi_curl(["-s", *line])
    want = reference.stdout.split(b"\r\n\r\n")
    got = ours.stdout.split(b"\r\n\r\n")
    assert len(got) == len(want)
    for mine, theirs in zip(got[:-1], want[:-1], strict=True):
        assert _head(mine) == _head(theirs)
    assert got[-1] == want[-1]  # the body
    assert ours.code == reference.code == 0


def test_write_out_matches_curl(tmp_path: Path) -> None:
    template = r"%{http_code} %{size_download} %{url_effective} %{num_redirects}\n%%\t%{method}\n"
    with recorder() as server:
        url = base_url(server) + "/redirect/302?to=/landed"
        reference = real_curl(["-s", "-L", "-o", "/dev/null", "-w", template, url])
        ours = mirapi_curl(["-s", "-L", "-o", "/dev/null", "-w", template, url])
        assert ours.stdout == reference.stdout
        timed = [
            mirapi_curl(["-s", "-o", "/dev/null", "-w", w, base_url(server)])
            for w in ("%{time_total}", "%{header_json}")
        ]
    assert re.fullmatch(rb"\d+\.\d{6}", timed[0].stdout)
    headers = json.loads(timed[1].stdout)
    assert headers["x-multi"] == ["a", "b"]
    assert headers["content-type"] == ["application/json"]
    assert reference.stdout.startswith(b"200 11 ")


def test_write_out_header_json_and_format_file_match_curl(tmp_path: Path) -> None:
    (tmp_path / "format").write_text("%{http_code}|%{content_type}|%header{x-multi}\\n")
    with recorder() as server:
        line = ["-s", "-o", "/dev/null", "-w", "%{header_json}", base_url(server)]
        reference, ours = real_curl(line), mirapi_curl(line)
        from_file = ["-s", "-o", "/dev/null", "-w", f"@{tmp_path / 'format'}", base_url(server)]
        assert mirapi_curl(from_file).stdout == real_curl(from_file).stdout
    want, got = json.loads(reference.stdout), json.loads(ours.stdout)
    for headers in (want, got):
        headers.pop("date")
    got.pop("x-request-id")
    assert got == want


def test_user_without_password_asks_for_it() -> None:
    with recorder() as server:
        real_curl(["-s", "-u", "user:s3cret", base_url(server)])
        ours = mirapi_curl(["-s", "-u", "user", base_url(server)], stdin=b"s3cret\n")
        want, got = (dict((n.lower(), v) for n, v in seen.headers) for seen in server.seen)
    assert ours.code == 0, ours.stderr
    assert got["authorization"] == want["authorization"]
    assert "s3cret" not in ours.stderr


def test_silent_hides_errors_and_show_error_shows_them() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/"
    assert real_curl(["-s", url]).stderr == mirapi_curl(["-s", url]).stderr == ""
    assert real_curl(["-sS", url]).stderr and mirapi_curl(["-sS", url]).stderr


def test_remote_name_writes_the_url_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs, mine = tmp_path / "curl", tmp_path / "mirapi"
    theirs.mkdir()
    mine.mkdir()
    monkeypatch.chdir(mine)
    with recorder() as server:
        url = base_url(server) + "/files/report.json"
        reference = real_curl(["-sO", url], cwd=str(theirs))
        ours = mirapi_curl(["-sO", url])
    assert reference.code == ours.code == 0
    assert (mine / "report.json").read_bytes() == (theirs / "report.json").read_bytes() == BODY
    assert ours.stdout == reference.stdout == b""


def _printed(stdout: bytes) -> tuple[object, ...]:
    """stdout with any `-i` header blocks read by `_head` (names may differ in case)."""
    if not stdout.startswith(b"HTTP/"):
        return (stdout,)
    *heads, body = stdout.split(b"\r\n\r\n")
    return (*(_head(head) for head in heads), body)


def _closed_port() -> int:
    """A loopback port that was bound and is now closed: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["-f", "{url}/status/404"], 22),
        (["--fail-with-body", "{url}/status/500"], 22),
        (["-i", "-f", "{url}/status/404"], 22),
        (["-i", "--fail-with-body", "{url}/status/404"], 22),
        (["-m", "0.5", "{url}/slow"], 28),
        (["http://127.0.0.1:{closed}/"], 7),
        (["-L", "--max-redirs", "1", "{url}/redirect/302?to=/redirect/302"], 47),
        (["http://"], 3),
        (["-o", "/nonexistent-dir/out", "{url}/"], 23),
        (["-F", "f=@/nonexistent-file", "{url}/"], 26),
    ],
    ids=[
        "-f 404",
        "--fail-with-body",
        "-i -f",
        "-i --fail-with-body",
        "-m timeout",
        "refused",
        "--max-redirs",
        "bad URL",
        "write error",
        "read error",
    ],
)
def test_exit_codes_and_stdout_match_curl(args: list[str], code: int, tmp_path: Path) -> None:
    with recorder() as server:
        fields = {"{url}": base_url(server), "{closed}": str(_closed_port())}
        line = [_fill(a, fields) for a in args]
        reference, ours = real_curl(["-s", *line]), mirapi_curl(["-s", *line])
    assert reference.code == code, reference.stderr
    assert ours.code == code, ours.stderr
    assert _printed(ours.stdout) == _printed(reference.stdout)
    assert "Traceback" not in ours.stderr


def test_insecure_accepts_a_self_signed_certificate_and_only_then(tmp_path: Path) -> None:
    with recorder(tls=tmp_path) as server:
        url = base_url(server) + "/tls"
        refused, ours_refused = real_curl(["-s", url]), mirapi_curl(["-s", url])
        accepted, ours_accepted = real_curl(["-sk", url]), mirapi_curl(["-sk", url])
        assert [seen.target for seen in server.seen] == ["/tls", "/tls"]
    assert accepted.code == ours_accepted.code == 0
    assert ours_accepted.stdout == accepted.stdout == BODY
    assert refused.code == ours_refused.code == 60, ours_refused.stderr


def test_connect_timeout_bounds_connecting_only() -> None:
    """A listener whose accept queue is full: the kernel drops the SYN, connecting hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        queued = [socket.socket() for _ in range(3)]
        for sock in queued:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        try:
            line = ["-sS", "--connect-timeout", "0.5", f"http://127.0.0.1:{port}/"]
            reference = real_curl(line)
            started = time.monotonic()
            ours = mirapi_curl(line)
            took = time.monotonic() - started
        finally:
            for sock in queued:
                sock.close()
    assert reference.code == ours.code == 28, ours.stderr
    assert took < 5  # not the 30 s per-attempt timeout


def test_an_unknown_host_exits_6_and_never_reaches_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    from mirapi_cli.commands import curl_io

    asked: list[str] = []

    class NoSuchHost:
        async def resolve(self, host: str, port: int) -> list[str]:
            asked.append(host)
            raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(curl_io, "resolver", NoSuchHost())
    ours = mirapi_curl(["-sS", "http://no-such-host.invalid/x"])
    assert ours.code == 6, ours.stderr
    assert asked == ["no-such-host.invalid"]
    assert "could not resolve" in ours.stderr


def test_a_redirect_to_another_host_goes_through_the_egress_policy(tmp_path: Path) -> None:
    with recorder() as server:
        port = server.server_address[1]
        hop = f"http://127.0.0.2:{port}/inside"
        ours = mirapi_curl(["-sS", "-L", f"{base_url(server)}/redirect/302?to={hop}"])
        assert [seen.target for seen in server.seen] == [f"/redirect/302?to={hop}"]
    assert ours.code == 1
    assert "127.0.0.2" in ours.stderr and "Traceback" not in ours.stderr


def test_a_mistyped_option_suggests_the_closest() -> None:
    # Refused before any call: the URL is never reached.
    ours = mirapi_curl(["--data-urlencod", "a=1", "http://127.0.0.1:9/"])
    assert ours.code == 2
    assert "--data-urlencode" in ours.stderr and "--data-dir" not in ours.stderr
    assert "--compressed" in mirapi_curl(["--compresed", "http://127.0.0.1:9/"]).stderr


def test_gzip_is_decoded_with_compressed_only(tmp_path: Path) -> None:
    with recorder() as server:
        url = base_url(server) + "/gzip"
        plain = mirapi_curl(["-s", "--compressed", url])
        raw = mirapi_curl(["-s", url])
        reference = real_curl(["-s", "--compressed", url])
    assert plain.stdout == reference.stdout == GZIPPED
    assert raw.stdout != GZIPPED
    assert BODY
