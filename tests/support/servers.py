"""Serve the sidecar in-process with Hypercorn, on 127.0.0.1, for HTTP-level tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from hypercorn.asyncio import serve
from hypercorn.config import Config

from sidecar.app import Sidecar


@asynccontextmanager
async def serving(app: Sidecar) -> AsyncIterator[str]:
    """Run `app` on an ephemeral loopback port; yields its base URL."""
    # Bound and listening before Hypercorn starts, and handed over as it is:
    # a port picked as free and bound later can be taken by a parallel test.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.01)
    try:
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
