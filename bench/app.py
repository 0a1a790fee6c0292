"""What the sidecar's own request path costs, in process: the ASGI call to the answer.

Everything between Hypercorn and the upstream: the door (Host, framing,
client keys), body read, policy parse, the whole chain and the observers
(events, stats, metrics, records, access log). The upstream client is a
stub answering a small 200 at once, so the figure is our Python cost;
`bench/run.py` measures the whole path with a real server and upstream.

    python bench/app.py                    # embedded store, no keys
    python bench/app.py --with-key         # one client key, sent on every request
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.app import Sidecar
from sidecar.config import Settings
from sidecar.exchange import Headers, Response


class StubUpstream:
    """Answers every attempt with a small 200, no network."""

    async def send(
        self, method: str, url: str, headers: Headers, body: bytes, timeout: float
    ) -> Response:
        return Response(200, [("content-type", "application/json")], b'{"ok":true}')

    async def aclose(self) -> None:
        return None


class Lifespan:
    """Drives the app's ASGI lifespan as Hypercorn would: startup, then shutdown."""

    def __init__(self, app: Sidecar) -> None:
        self._app = app
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _step(self, kind: str) -> None:
        await self._inbox.put({"type": f"lifespan.{kind}"})
        answer = await self._outbox.get()
        if not answer["type"].endswith("complete"):
            raise SystemExit(f"the sidecar did not {kind}: {answer}")

    async def startup(self) -> None:
        self._task = asyncio.create_task(self._app.lifespan(self._inbox.get, self._outbox.put))
        await self._step("startup")

    async def shutdown(self) -> None:
        await self._step("shutdown")
        if self._task is not None:
            await self._task


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/v1/items",
        "raw_path": b"/v1/items",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
    }


async def measure(app: Sidecar, headers: list[tuple[bytes, bytes]], requests: int) -> float:
    """Best of three: microseconds per request through `app`."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    scope = _scope(headers)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(requests):
            await app(scope, receive, send)
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
    return best


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--with-key", action="store_true", help="create a client key and send it")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the access log's cost is measured, not printed
    data_dir = Path(tempfile.mkdtemp())
    app = Sidecar(Settings(data_dir=data_dir), client=StubUpstream())  # type: ignore[arg-type]
    lifespan = Lifespan(app)
    await lifespan.startup()
    headers = [
        (b"host", b"127.0.0.1:8742"),
        (b"x-target-url", b"http://127.0.0.1:9/"),
        (b"user-agent", b"bench"),
    ]
    try:
        if args.with_key:
            from sidecar.security import client_keys

            key, text = client_keys.new_key("bench", time.time())
            await app.store.record_put(client_keys.KIND, key.id, client_keys.encode(key), True)
            await app.keys.refresh()
            headers.append((b"x-mirapi-key", text.encode()))
        cost = await measure(app, headers, args.requests)
        print(f"sidecar request path, stub upstream: {cost:7.1f} µs/request")
    finally:
        await lifespan.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
