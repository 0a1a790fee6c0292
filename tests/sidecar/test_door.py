"""No input gets a 500 or moves a request (issue 14, SPEC §1 and §2 "Bad header values").

Each case the raw-socket fuzz found, over real HTTP: a sidecar served by
Hypercorn in this process, a real upstream on 127.0.0.1, raw sockets where
httpx would not send what a client can. A second loopback address,
127.0.0.2, stands for "another host": a listener there counts connections,
and the egress policy's resolver and vetting are spied on, so a test sees
any attempt to call a host the request did not name, and any name lookup.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sidecar.app import Sidecar
from sidecar.routing import routes
from sidecar.routing.routes import Endpoint, Route
from sidecar.security.egress import EgressPolicy
from tests.conftest import make_settings
from tests.support.servers import serving
from tests.support.upstream import Upstream, echo


class SpyResolver:
    """Records every name looked up; answers none (the tests look nothing up)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.names.append(host)
        raise OSError("the test resolver looks nothing up")


class SpyEgress(EgressPolicy):
    """The real policy (loopback allowed), recording every host it vets."""

    def __init__(self, resolver: SpyResolver) -> None:
        super().__init__(allow_private=True, resolver=resolver)
        self.vetted: list[str] = []

    async def vet(self, host: str, port: int) -> list[str]:
        self.vetted.append(host)
        return await super().vet(host, port)


@dataclass
class Elsewhere:
    """A listener on 127.0.0.2: another host, which no request here names."""

    port: int
    connections: list[bytes] = field(default_factory=list)


@dataclass
class Door:
    """The sidecar under test and what the spies saw."""

    url: str
    app: Sidecar
    egress: SpyEgress
    resolver: SpyResolver

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("http://").rpartition(":")
        return host, int(port)


@pytest.fixture
async def elsewhere() -> AsyncIterator[Elsewhere]:
    found = Elsewhere(0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        found.connections.append(await reader.read(4096))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nmoved!")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.2", 0)
    found.port = server.sockets[0].getsockname()[1]
    async with server:
        yield found


@pytest.fixture
async def door(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Door]:
    upstream.default = echo()
    resolver = SpyResolver()
    egress = SpyEgress(resolver)
    app = Sidecar(make_settings(tmp_path), egress=egress)
    async with serving(app) as url:
        # A pinned route whose endpoint adds a header of its own.
        route = Route("pay", (Endpoint(upstream.url, headers=(("Stripe-Version", "2024"),)),))
        await app.store.record_put("routes", "pay", routes.encode(route), True)
        await app.routes.refresh()
        yield Door(url, app, egress, resolver)


async def raw_request(door: Door, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `head` (a request line and headers, no body) as it is; status, headers, body."""
    reader, writer = await asyncio.open_connection(*door.address)
    try:
        writer.write(head + b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read(-1)
    finally:
        writer.close()
    top, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


def error_of(body: bytes) -> dict[str, str]:
    error: dict[str, str] = json.loads(body)["error"]
    return error


# --- header bytes -----------------------------------------------------------


async def test_utf8_header_values_reach_the_upstream_byte_for_byte(
    door: Door, upstream: Upstream
) -> None:
    async with httpx.AsyncClient(base_url=door.url) as http:
        answer = await http.get(
            "/",
            headers={
                b"X-Target-URL": upstream.url.encode(),
                b"User-Agent": "na\u00efve".encode(),
                b"X-Identity-Key": "cl\u00e9".encode(),
            },
        )
    assert answer.status_code == 200
    seen = upstream.seen[0].headers
    # aiohttp reads header bytes as UTF-8: mangled bytes would read "naÃ¯ve".
    assert seen["user-agent"] == "na\u00efve"
    assert seen["authorization"].endswith(" cl\u00e9") or seen["authorization"] == "cl\u00e9"


async def test_latin1_obs_text_is_a_bad_header_naming_it(door: Door, upstream: Upstream) -> None:
    status, _, body = await raw_request(
        door,
        f"GET / HTTP/1.1\r\nX-Target-URL: {upstream.url}\r\n".encode()
        + b"Accept-Language: caf\xe9\r\n",
    )
    assert status == 400
    error = error_of(body)
    assert error["code"] == "bad_header"
    assert error["message"].startswith("accept-language: is not UTF-8")
    assert upstream.seen == []


async def test_a_non_ascii_request_id_is_refused_and_never_echoed_mangled(
    door: Door, upstream: Upstream
) -> None:
    status, headers, body = await raw_request(
        door,
        f"GET / HTTP/1.1\r\nX-Target-URL: {upstream.url}\r\n".encode()
        + "X-Request-ID: r\u00e9q-1\r\n".encode(),
    )
    assert status == 400
    error = error_of(body)
    assert error["code"] == "bad_header"
    assert error["message"].startswith("X-Request-ID:")
    # A new id, the same in the header and the body: not the client's, re-encoded.
    assert headers["x-request-id"] == error["request_id"]
    assert headers["x-request-id"].isascii() and "q-1" not in headers["x-request-id"]
    assert upstream.seen == []


async def test_a_callback_job_with_utf8_headers_is_accepted_and_runs(
    door: Door, upstream: Upstream
) -> None:
    async with httpx.AsyncClient(base_url=door.url) as http:
        answer = await http.post(
            "/v1/charges",
            headers={
                b"X-Target-URL": upstream.url.encode(),
                b"X-Webhook-Callback": f"{upstream.url}/hook".encode(),
                b"User-Agent": "na\u00efve".encode(),
            },
            content=b"amount=1",
        )
        assert answer.status_code == 202
        for _ in range(100):
            if any(seen.path_qs == "/v1/charges" for seen in upstream.seen):
                break
            await asyncio.sleep(0.05)
    ran = [seen for seen in upstream.seen if seen.path_qs == "/v1/charges"]
    assert ran and ran[0].headers["user-agent"] == "na\u00efve"


async def test_a_callback_job_that_could_never_be_sent_is_refused_not_accepted(
    door: Door, upstream: Upstream
) -> None:
    callback = f"X-Webhook-Callback: {upstream.url}/hook\r\n".encode()
    target = f"X-Target-URL: {upstream.url}\r\n".encode()
    for head in (
        b"POST / HTTP/1.1\r\n" + target + callback + b"User-Agent: caf\xe9\r\n",
        b"POST / HTTP/1.1\r\n" + target + b"X-Webhook-Callback: http://127.0.0.1 :9/\r\n",
        b"POST / HTTP/1.1\r\n" + target + b"X-Webhook-Callback: http://%31%32%37.0.0.1/\r\n",
    ):
        status, _, body = await raw_request(door, head)
        assert status == 400, head
        assert error_of(body)["code"] == "bad_header"
    assert await door.app.store.job_depth() == 0
    assert door.resolver.names == []


# --- request-targets ----------------------------------------------------------


@pytest.mark.parametrize("line", [b"OPTIONS * HTTP/1.1", b"GET echo HTTP/1.1"])
async def test_a_request_target_that_is_no_path_is_a_bad_request(
    door: Door, upstream: Upstream, line: bytes
) -> None:
    status, _, body = await raw_request(
        door, line + f"\r\nX-Target-URL: {upstream.url}\r\n".encode()
    )
    assert status == 400
    assert error_of(body)["code"] == "bad_request"
    assert upstream.seen == []


async def test_an_absolute_form_target_is_a_bad_request_and_calls_nothing(
    door: Door, upstream: Upstream, elsewhere: Elsewhere
) -> None:
    line = f"GET http://127.0.0.2:{elsewhere.port}/path HTTP/1.1\r\n".encode()
    status, _, body = await raw_request(door, line + f"X-Target-URL: {upstream.url}\r\n".encode())
    assert status == 400
    assert error_of(body)["code"] == "bad_request"
    assert upstream.seen == [] and elsewhere.connections == []


@pytest.mark.parametrize("mode", ["X-Target-URL", "X-Route-Key"])
async def test_no_request_target_moves_a_request_to_another_host(
    door: Door, upstream: Upstream, elsewhere: Elsewhere, mode: str
) -> None:
    # Joined after http://127.0.0.1:PORT, "@127.0.0.2:P/echo" made the old
    # port the userinfo and 127.0.0.2 the host (with the route's headers).
    header = f"X-Target-URL: {upstream.url}" if mode == "X-Target-URL" else "X-Route-Key: pay"
    for target in (f"@127.0.0.2:{elsewhere.port}/echo", f":1@127.0.0.2:{elsewhere.port}/"):
        status, _, body = await raw_request(door, f"GET {target} HTTP/1.1\r\n{header}\r\n".encode())
        assert status == 400
        assert error_of(body)["code"] == "bad_request"
    assert elsewhere.connections == []
    assert "127.0.0.2" not in door.egress.vetted
    assert upstream.seen == []
    # The same request with a path goes where the header said, and only there.
    status, _, _ = await raw_request(door, f"GET /echo HTTP/1.1\r\n{header}\r\n".encode())
    assert status == 200
    assert [seen.path_qs for seen in upstream.seen] == ["/echo"]
    assert elsewhere.connections == []


async def test_a_path_that_looks_like_a_host_stays_a_path(
    door: Door, upstream: Upstream, elsewhere: Elsewhere
) -> None:
    for target in (f"//127.0.0.2:{elsewhere.port}/x", f"/@127.0.0.2:{elsewhere.port}/x"):
        status, _, _ = await raw_request(
            door, f"GET {target} HTTP/1.1\r\nX-Target-URL: {upstream.url}\r\n".encode()
        )
        assert status == 200
    # (aiohttp's server shows a path starting with // with two more slashes.)
    assert [seen.path_qs.lstrip("/") for seen in upstream.seen] == [
        f"127.0.0.2:{elsewhere.port}/x",
        f"@127.0.0.2:{elsewhere.port}/x",
    ]
    assert elsewhere.connections == []


# --- target URLs --------------------------------------------------------------


async def test_a_tab_in_the_target_url_is_a_bad_header(door: Door, upstream: Upstream) -> None:
    status, _, body = await raw_request(
        door, f"GET / HTTP/1.1\r\nX-Target-URL: {upstream.url}\t/x\r\n".encode()
    )
    assert status == 400
    error = error_of(body)
    assert error["code"] == "bad_header"
    assert error["message"].startswith("X-Target-URL:") and "TAB" in error["message"]
    assert upstream.seen == []


@pytest.mark.parametrize("header", ["X-Target-URL", "X-Failover-URL", "X-Webhook-Callback"])
@pytest.mark.parametrize(
    "url",
    [
        b"http://127.0.0.1 :9/",
        b"http://%31%32%37.0.0.1:9/",
        "http://\uff11\uff12\uff17.0.0.1:9/".encode(),
        "http://b\u00fccher.example/".encode(),
    ],
)
async def test_a_malformed_host_is_refused_before_any_lookup(
    door: Door, upstream: Upstream, header: str, url: bytes
) -> None:
    primary = b"" if header == "X-Target-URL" else f"X-Target-URL: {upstream.url}\r\n".encode()
    status, _, body = await raw_request(
        door, b"GET / HTTP/1.1\r\n" + primary + header.encode() + b": " + url + b"\r\n"
    )
    assert status == 400
    error = error_of(body)
    assert error["code"] == "bad_header"
    assert error["message"].startswith(f"{header}:")
    assert door.resolver.names == []
    assert upstream.seen == []


# --- mirapi curl's in-process call goes through the same door -----------------------


async def test_a_one_off_call_reads_headers_as_the_door_does(upstream: Upstream) -> None:
    from sidecar import oneshot
    from sidecar.errors import BadHeader, BadRequest

    upstream.default = echo()
    target = ("X-Target-URL", upstream.url)
    response, _ = await oneshot.call(oneshot.OneShot("GET", [target, ("User-Agent", "na\u00efve")]))
    await response.discard()
    assert response.status == 200
    assert upstream.seen[0].headers["user-agent"] == "na\u00efve"
    with pytest.raises(BadHeader) as caught:
        await oneshot.call(oneshot.OneShot("GET", [target, ("X-Custom", "a\r\nX-Injected: 1")]))
    assert caught.value.header == "x-custom"
    moved = oneshot.OneShot("GET", [("X-Route-Key", "pay")], path="@127.0.0.2:9/x")
    with pytest.raises(BadRequest):
        await oneshot.call(moved, routes={"pay": Route("pay", (Endpoint(upstream.url),))})
    assert len(upstream.seen) == 1


async def test_a_header_a_stage_adds_beyond_latin1_is_sent_not_a_crash(tmp_path: Path) -> None:
    from sidecar.exchange import Exchange, Response

    app = Sidecar(make_settings(tmp_path), egress=EgressPolicy(allow_private=True))

    async def answer(_: Exchange) -> Response:
        # As a stage might: a model name or a URL that is text, not bytes.
        return Response(200, [("x-llm-model", "mod\u00e8le-\u20ac")], b"ok")

    app.chain = answer
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/", headers={"X-Target-URL": "http://127.0.0.1:9"})
    assert response.status_code == 200
    raw = dict(response.headers.raw)
    # Not latin-1 all through, so the whole value goes as UTF-8.
    assert raw[b"x-llm-model"] == "mod\u00e8le-\u20ac".encode()
