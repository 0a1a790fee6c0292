"""The local upstream the docs' commands talk to: httpbin on 127.0.0.1.

Every public URL in a doc (api.stripe.com, api.openai.com, httpbin.org,
app.example.com, ...) is rewritten to one of these servers before the
command runs, keeping the path, so it has to answer whatever a doc sends
like a friendly API would:

    /status/CODE     answers CODE (httpbin's /status), a JSON body
    /delay/SECONDS   waits (at most 10 s), then echoes
    anything else    200 and an httpbin-style echo of the request (method,
                     url, args, headers, data, form, json): webhook
                     callbacks, charges, chat completions alike

So the docs can show real rescues against httpbin.org that a reader can
repeat (`/status/503` then a failover to `/anything`), and this server
behaves the same. A flaky upstream of the docs' own (the quickstart's
flaky.py) runs as the docs say, on loopback, and needs no stand-in.

One server per Markdown file; it listens on one loopback address per public
host the file names (127.0.0.2 for api.stripe.com, ...), so a secret stored
for one host is still not sent to another. All of them run on one event
loop in a thread of their own, since the docs' commands run in subprocesses
that the test waits for.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl

import orjson
import pytest
from aiohttp import web

MAX_DELAY = 10.0


def _json(status: int, data: object) -> web.Response:
    body = orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"
    return web.Response(status=status, body=body, content_type="application/json")


def _echo(request: web.Request, body: bytes) -> dict[str, object]:
    """What httpbin's /anything answers: the request, as the upstream saw it."""
    text = body.decode("utf-8", "replace")
    form: dict[str, str] = {}
    data: object = None
    if request.content_type == "application/x-www-form-urlencoded":
        form = dict(parse_qsl(text))
        text = ""
    elif request.content_type == "application/json":
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
    return {
        "method": request.method,
        "url": str(request.url),
        "args": {str(name): value for name, value in request.query.items()},
        "headers": {str(name): value for name, value in request.headers.items()},
        "data": text,
        "form": form,
        "json": data,
    }


async def httpbin(request: web.Request) -> web.StreamResponse:
    """Answer as httpbin.org would: /status/CODE, /delay/SECONDS, else an echo."""
    body = await request.read()
    parts = [part for part in request.path.split("/") if part]
    if len(parts) == 2 and parts[0] == "status" and parts[1].isdigit():
        status = int(parts[1])
        return _json(status, {"status": status})
    if len(parts) == 2 and parts[0] == "delay":
        try:
            await asyncio.sleep(min(float(parts[1]), MAX_DELAY))
        except ValueError:
            return _json(400, {"error": "delay needs seconds"})
    return _json(200, _echo(request, body))


@dataclass(frozen=True)
class Upstream:
    """One file's upstream: a port, served on one loopback address per public host."""

    port: int
    addresses: dict[str, str]  # public host -> 127.0.0.N


class UpstreamLoop:
    """An event loop in a thread that serves any number of httpbin upstreams."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []
        self._thread.start()

    def start(self, hosts: list[str]) -> Upstream:
        """A new upstream that answers for `hosts`, each on an address of its own.

        127.0.0.2, 127.0.0.3, ... (Linux routes all of 127/8 to loopback), so
        that secrets, egress rules and breakers still tell the hosts apart.
        """
        future = asyncio.run_coroutine_threadsafe(self._start(hosts), self.loop)
        return future.result(timeout=10)

    async def _start(self, hosts: list[str]) -> Upstream:
        # The port comes from binding 127.0.0.1; a parallel test may hold the
        # same port on 127.0.0.N, so a clash means a new port, not a shared
        # address (secrets and breakers must still tell the hosts apart).
        for _ in range(20):
            upstream = await self._start_once(hosts)
            if upstream is not None:
                return upstream
        raise RuntimeError("no port free on every upstream address after 20 tries")

    async def _start_once(self, hosts: list[str]) -> Upstream | None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", httpbin)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = int(runner.addresses[0][1])  # the ephemeral port it got
        addresses = {}
        for number, host in enumerate(sorted(hosts), start=2):
            address = f"127.0.0.{number}"
            try:
                await web.TCPSite(runner, address, port).start()
            except OSError:
                await runner.cleanup()
                return None
            addresses[host] = address
        self._runners.append(runner)
        return Upstream(port, addresses)

    def close(self) -> None:
        async def cleanup() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[UpstreamLoop]:
    """Starts httpbin-like upstreams on loopback; all stopped at the end."""
    serving = UpstreamLoop()
    try:
        yield serving
    finally:
        serving.close()
