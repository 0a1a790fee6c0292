"""Every backend behind one `store` fixture, for the contract suite (SPEC §7).

One contract module per capability (`test_<capability>_contract.py`), each
run against every backend:

  memory     MemoryStore
  embedded   EmbeddedStore on a SQLite file in tmp_path
  redis      RedisStore on the private test redis-server (tests/support/redis.py)
  cluster    RedisStore on a private 3-node Redis Cluster (redis+cluster://):
             any operation whose keys are not in one hash slot fails here
             (CROSSSLOT), so the whole contract is the key-layout check
  resilient  ResilientStore on that server, with a MemoryStore beside it:
             what production runs with a `redis` setting
  degraded   ResilientStore whose Redis is unreachable (a socket that does
             not exist): only for the capabilities that fall back to local
             state (FALLS_BACK_BACKENDS); the others must raise instead,
             which test_resilient.py pins

Each store gets a FakeClock (the `fake` fixture) and is opened and closed
around the test. The redis params start the private test server only when
they run, and are skipped when redis-server is not installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sidecar.store.base import Store
from sidecar.store.embedded import EmbeddedStore
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock
from tests.support.redis import LocalCluster, StartOnce, started_once

#: Room for every entry a contract test stores.
CACHE_BYTES = 1 << 20
#: The backends every capability's contract runs on.
BACKENDS = ["memory", "embedded", "redis", "resilient", "cluster"]
#: For the capabilities that fall back to local state when Redis is lost.
FALLS_BACK_BACKENDS = [*BACKENDS, "degraded"]
#: The backends where a second store shares the first one's state.
SHARED_BACKENDS = ["embedded", "redis", "resilient", "cluster"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`store` on each of the module's STORE_BACKENDS (default BACKENDS), unless
    the test names its own."""
    if "store" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        if "store" in mark.args[0]:
            return
    backends = getattr(metafunc.module, "STORE_BACKENDS", BACKENDS)
    metafunc.parametrize("store", backends, indirect=True)


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartOnce[LocalCluster]]:
    """One private 3-node Redis Cluster for the session, started on first use."""
    with started_once(LocalCluster(tmp_path_factory.mktemp("cluster"))) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_url(redis_cluster: StartOnce[LocalCluster]) -> str:
    """The private cluster's redis+cluster:// URL, every node emptied for this test."""
    cluster = redis_cluster.get()
    cluster.flush()
    return cluster.url


def _redis_store(request: pytest.FixtureRequest, fake: FakeClock) -> Store:
    from sidecar.store.redis import RedisStore

    return RedisStore(request.getfixturevalue("redis_url"), fake.clock())


def _resilient_store(url: str, fake: FakeClock) -> Store:
    from sidecar.store.redis import RedisStore
    from sidecar.store.resilient import ResilientStore

    local = MemoryStore(fake.clock(), CACHE_BYTES)
    # A long retry: a degraded store's watcher never pings during a test.
    return ResilientStore(RedisStore(url, fake.clock()), local, fake.clock(), retry_interval=60)


def _backend(request: pytest.FixtureRequest, name: str, fake: FakeClock, tmp_path: Path) -> Store:
    if name == "memory":
        return MemoryStore(fake.clock(), CACHE_BYTES)
    if name == "embedded":
        return EmbeddedStore(tmp_path / "mirapi.db", fake.clock(), CACHE_BYTES)
    if name == "redis":
        return _redis_store(request, fake)
    if name == "resilient":
        return _resilient_store(request.getfixturevalue("redis_url"), fake)
    if name == "cluster":
        from sidecar.store.redis import RedisStore

        return RedisStore(request.getfixturevalue("redis_cluster_url"), fake.clock())
    if name == "degraded":
        return _resilient_store(f"unix://{tmp_path / 'no-redis.sock'}", fake)
    raise AssertionError(f"no backend {name!r}")


@pytest.fixture
async def store(
    request: pytest.FixtureRequest, fake: FakeClock, tmp_path: Path
) -> AsyncIterator[Store]:
    """An opened store of each backend, on the fake clock."""
    backend = _backend(request, request.param, fake, tmp_path)
    await backend.open()
    if request.param == "degraded":
        assert not backend.health().ok, "the degraded store found a Redis"
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
    if backend not in SHARED_BACKENDS:
        raise AssertionError(f"no second view of a {backend} store")
    second = _backend(request, backend, fake, tmp_path)
    await second.open()
    try:
        yield second
    finally:
        await second.close()
