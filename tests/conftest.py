"""Shared fixtures: a real upstream and a real sidecar, both on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.app import Sidecar
from sidecar.config import Settings
from sidecar.egress import EgressPolicy
from tests.support.redis import RedisServer
from tests.support.servers import serving
from tests.support.upstream import Upstream, start_upstream


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A scripted HTTP upstream on 127.0.0.1."""
    server, runner = await start_upstream()
    try:
        yield server
    finally:
        await runner.cleanup()


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for a test sidecar: its own data dir, loopback targets allowed."""
    values: dict[str, object] = {"data_dir": tmp_path, "allow_private": True}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def sidecar_url(tmp_path: Path) -> AsyncIterator[str]:
    """A sidecar served by Hypercorn in this process; its base URL."""
    settings = make_settings(tmp_path)
    app = Sidecar(settings, egress=EgressPolicy(allow_private=True))
    async with serving(app) as url:
        yield url


@pytest.fixture
async def client(sidecar_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client pointed at the test sidecar."""
    async with httpx.AsyncClient(base_url=sidecar_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the session (skipped when not installed)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The private server's unix:// URL, emptied for this test."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and restart."""
    server = RedisServer(tmp_path_factory.mktemp("rd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
