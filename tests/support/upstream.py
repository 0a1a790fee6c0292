"""A real HTTP upstream for tests, on 127.0.0.1, scripted per request.

Each request pops the next scripted behaviour (or uses the default), and is
recorded with its method, path, query, headers and exact body bytes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    path_qs: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    body: bytes
    at: float


Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(
    status: int = 200,
    body: bytes | str = b'{"ok":true}',
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
) -> Behaviour:
    """Answer with `status` and `body` after `delay` seconds."""
    data = body.encode() if isinstance(body, str) else body

    async def behave(request: web.Request) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        return web.Response(
            status=status,
            body=data,
            headers=headers or {"Content-Type": "application/json"},
        )

    return behave


def drop() -> Behaviour:
    """Close the connection without answering (a reset as the proxy sees it)."""

    async def behave(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError

    return behave


def echo() -> Behaviour:
    """Answer 200 with the request body, byte for byte."""

    async def behave(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        return web.Response(body=body, content_type="application/octet-stream")

    return behave


def stream(chunks: list[bytes], gap: float, break_after: int | None = None) -> Behaviour:
    """Send `chunks` with `gap` seconds between them; abort after `break_after` chunks."""

    async def behave(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index, chunk in enumerate(chunks):
            if break_after is not None and index == break_after:
                assert request.transport is not None
                request.transport.abort()
                return response
            await response.write(chunk)
            await asyncio.sleep(gap)
        await response.write_eof()
        return response

    return behave


@dataclass
class Upstream:
    """The running server: its URL, its script and what it saw."""

    url: str = ""
    default: Behaviour = field(default_factory=reply)
    script: deque[Behaviour] = field(default_factory=deque)
    seen: list[Seen] = field(default_factory=list)

    def then(self, *behaviours: Behaviour) -> Upstream:
        """Queue behaviours for the next requests, in order."""
        self.script.extend(behaviours)
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(
                method=request.method,
                path_qs=request.path_qs,
                headers={k.lower(): v for k, v in request.headers.items()},
                raw_headers=[(k.lower(), v) for k, v in request.headers.items()],
                body=body,
                at=asyncio.get_running_loop().time(),
            )
        )
        behaviour = self.script.popleft() if self.script else self.default
        return await behaviour(request)


async def start_upstream() -> tuple[Upstream, web.AppRunner]:
    """Start an Upstream on 127.0.0.1 with an ephemeral port."""
    upstream = Upstream()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", upstream._handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    port = server.sockets[0].getsockname()[1]
    upstream.url = f"http://127.0.0.1:{port}"
    return upstream, runner


def truncated(declared: int = 100, sent: bytes = b"partial") -> Behaviour:
    """Promise `declared` bytes, send fewer, then drop the connection."""

    async def behave(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(declared)})
        await response.prepare(request)
        await response.write(sent)
        assert request.transport is not None
        request.transport.abort()
        return response

    return behave
