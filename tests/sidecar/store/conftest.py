"""Every backend behind one `store` fixture, for the contract suite (SPEC §7).

Each store gets a FakeClock (the `fake` fixture) and is opened and closed
around the test. The redis param starts the private test server only when
it runs, and is skipped when redis-server is not installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.store.base import Store
from sidecar.store.embedded import EmbeddedStore
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock

#: Room for every entry a contract test stores.
CACHE_BYTES = 1 << 20


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


def _redis_store(request: pytest.FixtureRequest, fake: FakeClock) -> Store:
    try:
        from sidecar.store.redis import RedisStore
    except ImportError:
        pytest.skip("RedisStore not written yet")
    return RedisStore(request.getfixturevalue("redis_url"), fake.clock())


@pytest.fixture(params=["memory", "embedded", "redis"])
async def store(
    request: pytest.FixtureRequest, fake: FakeClock, tmp_path: Path
) -> AsyncIterator[Store]:
    """An opened store of each backend, on the fake clock."""
    backend: Store
    if request.param == "memory":
        backend = MemoryStore(fake.clock(), CACHE_BYTES)
    elif request.param == "embedded":
        backend = EmbeddedStore(tmp_path / "mirapi.db", fake.clock(), CACHE_BYTES)
    else:
        backend = _redis_store(request, fake)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def other(
    store: Store, request: pytest.FixtureRequest, tmp_path: Path, fake: FakeClock
) -> AsyncIterator[Store]:
    """A second store on the same file or server as `store` (another sidecar, or the CLI)."""
    backend = request.node.callspec.params["store"]
    second: Store
    if backend == "embedded":
        second = EmbeddedStore(tmp_path / "mirapi.db", fake.clock())
    elif backend == "redis":
        from sidecar.store.redis import RedisStore

        second = RedisStore(request.getfixturevalue("redis_url"), fake.clock())
    else:
        raise AssertionError(f"no second view of a {backend} store")
    await second.open()
    try:
        yield second
    finally:
        await second.close()
