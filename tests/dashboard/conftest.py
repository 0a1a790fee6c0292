"""Fixtures for the dashboard: a sidecar in this process, served on loopback, and a
way to call its ASGI app as a client from another address would (no traffic leaves)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.app import Sidecar
from sidecar.security import client_keys
from sidecar.security.egress import EgressPolicy
from tests.conftest import make_settings
from tests.e2e.conftest import cli, http  # noqa: F401  (real processes, for the browser tests)
from tests.support.servers import serving


@dataclass
class Dash:
    app: Sidecar
    url: str
    http: httpx.AsyncClient

    async def add_key(self) -> str:
        """A new client key, stored and loaded: keys are in use from now on."""
        record, text = client_keys.new_key("dashboard test", self.app.clock.now())
        await self.app.store.record_put(
            client_keys.KIND, record.id, client_keys.encode(record), False
        )
        await self.app.keys.refresh()
        return text


@pytest.fixture
async def dash(tmp_path: Path) -> AsyncIterator[Dash]:
    settings = make_settings(tmp_path, record_bodies=True)
    app = Sidecar(settings, egress=EgressPolicy(allow_private=True))
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        yield Dash(app, url, client)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def asgi_get(
    app: Sidecar,
    path: str,
    *,
    client: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Answer:
    """One request straight into the ASGI app, as from `client` (an address; no network)."""
    raw = [(b"host", b"127.0.0.1:8742")]
    raw += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "client": (client, 50000),
        "server": ("127.0.0.1", 8742),
    }
    sent: list[dict[str, Any]] = []
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal done
        if done:
            # The client stays until the answer is sent (Quart stops at a disconnect).
            await asyncio.Event().wait()
        done = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    found = {name.decode().lower(): value.decode() for name, value in start["headers"]}
    return Answer(start["status"], found, body)
