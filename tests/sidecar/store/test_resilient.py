"""Redis lost and found again: requests keep being answered, from local state
in between, and shared state resumes in Redis once it answers (SPEC §7)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from sidecar.errors import StoreUnavailable
from sidecar.store.base import BreakerState, ClaimOutcome, StoredResponse, WaitOutcome
from sidecar.store.memory import MemoryStore
from sidecar.store.redis import RedisStore
from sidecar.store.resilient import ResilientStore
from tests.support.clock import FakeClock
from tests.support.redis import RedisServer

RETRY = 0.05


class CountingRedis(RedisStore):
    """A RedisStore that counts the cache reads and route writes it is asked for."""

    cache_gets = 0
    route_puts = 0

    async def cache_get(self, key: str) -> StoredResponse | None:
        self.cache_gets += 1
        return await super().cache_get(key)

    async def route_put(self, name: str, data: bytes, replace: bool) -> bool:
        self.route_puts += 1
        return await super().record_put("routes", name, data, replace)


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(redis_server: RedisServer, redis_url: str) -> Iterator[RedisServer]:
    """The private server, flushed, and running again after the test whatever it did."""
    yield redis_server
    if redis_server.process is None:
        redis_server.start()


@pytest.fixture
async def primary(redis_url: str, fake: FakeClock) -> CountingRedis:
    return CountingRedis(redis_url, fake.clock())


@pytest.fixture
async def store(primary: CountingRedis, fake: FakeClock) -> AsyncIterator[ResilientStore]:
    resilient = ResilientStore(
        primary, MemoryStore(fake.clock(), 1 << 20), fake.clock(), retry_interval=RETRY
    )
    await resilient.open()
    yield resilient
    await resilient.close()


@pytest.fixture
async def direct(redis_url: str, fake: FakeClock) -> AsyncIterator[RedisStore]:
    """Another sidecar's view of the same Redis."""
    other = RedisStore(redis_url, fake.clock())
    yield other
    await other.close()


def response(fake: FakeClock, body: bytes = b"ok") -> StoredResponse:
    return StoredResponse(200, (), body, fake.t, fake.t + 300)


async def until_healthy(store: ResilientStore, within: float = 2.0) -> float:
    """Seconds it took `store` to report healthy again (fails after `within`)."""
    started = time.monotonic()
    while not store.health().ok:
        assert time.monotonic() - started < within, store.health()
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_healthy_store_writes_to_redis(
    store: ResilientStore, direct: RedisStore, fake: FakeClock
) -> None:
    await store.cache_put("k", response(fake, b"shared"))

    assert store.health().ok
    entry = await direct.cache_get("k")
    assert entry is not None and entry.body == b"shared"


async def test_redis_lost_mid_run_answers_from_local_then_recovers(
    store: ResilientStore,
    server: RedisServer,
    direct: RedisStore,
    fake: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mirapi.store")
    await store.cache_put("before", response(fake))
    server.stop()

    # Every kind of call is answered, none raises.
    await store.cache_put("during", response(fake, b"local"))
    entry = await store.cache_get("during")
    assert entry is not None and entry.body == b"local"
    for _ in range(2):
        await store.breaker_record("api.example.com", success=False, threshold=2)
    assert (await store.breaker_status("api.example.com")).state is BreakerState.OPEN
    assert not (await store.breaker_admit("api.example.com", 30, 5)).allowed
    claim = await store.idem_claim("k", "fp", "tok", 60)
    assert claim.outcome is ClaimOutcome.ACQUIRED

    health = store.health()
    assert not health.ok
    assert health.backend == "redis"
    assert health.reason is not None
    assert health.reason.startswith("redis unreachable: ")
    assert health.reason.endswith("; using local state")
    assert str(server.socket) not in health.reason

    server.start()
    assert await until_healthy(store) < 10 * RETRY
    await store.cache_put("after", response(fake, b"back"))
    entry = await direct.cache_get("after")
    assert entry is not None and entry.body == b"back"

    # One line per transition, and never where Redis lives.
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "mirapi.store"]
    assert [level for level, _ in messages] == [logging.WARNING, logging.INFO]
    assert all(str(server.socket) not in message for _, message in messages)


async def test_while_degraded_requests_do_not_touch_redis(
    store: ResilientStore, primary: CountingRedis, server: RedisServer
) -> None:
    server.stop()
    await store.cache_get("k")  # finds Redis gone
    assert primary.cache_gets == 1

    for _ in range(5):
        assert await store.cache_get("k") is None

    assert primary.cache_gets == 1
    assert not store.health().ok


async def test_starting_with_redis_down_works_and_recovers(
    server: RedisServer, redis_url: str, direct: RedisStore, fake: FakeClock
) -> None:
    server.stop()
    store = ResilientStore(
        RedisStore(redis_url, fake.clock()),
        MemoryStore(fake.clock(), 1 << 20),
        fake.clock(),
        retry_interval=RETRY,
    )
    try:
        await store.open()
        assert not store.health().ok
        await store.cache_put("k", response(fake, b"local"))
        entry = await store.cache_get("k")
        assert entry is not None and entry.body == b"local"

        server.start()
        await until_healthy(store)
        await store.cache_put("k2", response(fake, b"redis"))
        entry = await direct.cache_get("k2")
        assert entry is not None and entry.body == b"redis"
    finally:
        await store.close()


async def test_a_lock_taken_locally_is_finished_and_waited_on_locally(
    store: ResilientStore, server: RedisServer, direct: RedisStore, fake: FakeClock
) -> None:
    server.stop()
    assert (await store.idem_claim("k", "fp", "local-tok", 60)).outcome is ClaimOutcome.ACQUIRED
    server.start()
    await until_healthy(store)

    # Redis is back, but the key in flight stays where its lock is.
    duplicate = await store.idem_claim("k", "fp", "second", 60)
    assert (duplicate.outcome, duplicate.token) == (ClaimOutcome.IN_FLIGHT, "local-tok")
    assert await store.idem_renew("k", "local-tok", 60)
    waiting = asyncio.ensure_future(store.idem_wait("k", "local-tok", timeout=5))
    await asyncio.sleep(0.02)
    await store.idem_finish("k", "local-tok", response(fake, b"once"), keep_until=None)
    result = await asyncio.wait_for(waiting, 1)

    assert result.outcome is WaitOutcome.SHARED
    assert result.response is not None and result.response.body == b"once"
    # Redis never saw that key; another key's lock goes to Redis again.
    assert (await direct.idem_claim("k", "fp", "elsewhere", 60)).outcome is ClaimOutcome.ACQUIRED
    assert (await store.idem_claim("k2", "fp", "tok", 60)).outcome is ClaimOutcome.ACQUIRED
    assert (await direct.idem_claim("k2", "fp", "x", 60)).outcome is ClaimOutcome.IN_FLIGHT


async def test_a_redis_lock_caught_by_the_outage_never_raises(
    store: ResilientStore, server: RedisServer, fake: FakeClock
) -> None:
    assert (await store.idem_claim("k", "fp", "tok", 60)).outcome is ClaimOutcome.ACQUIRED
    server.stop()

    # The call in flight goes on; its waiters are told to claim again.
    assert await store.idem_renew("k", "tok", 60)
    assert (await store.idem_wait("k", "tok", timeout=1)).outcome is WaitOutcome.LOST
    await store.idem_finish("k", "tok", response(fake), keep_until=fake.t + 60)
    again = await store.idem_claim("k", "fp", "tok2", 60)
    assert again.outcome is ClaimOutcome.ACQUIRED
    assert not store.health().ok


class CancelSwallowingRedis(RedisStore):
    """Pings that fail slowly and may lose a cancellation, as Python 3.11's
    asyncio.wait_for (used inside redis-py) sometimes does."""

    async def ping(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.02)
        raise StoreUnavailable("redis unreachable: timed out")


async def test_close_ends_the_watcher_even_when_a_ping_loses_the_cancel(
    redis_url: str, fake: FakeClock
) -> None:
    store = ResilientStore(
        CancelSwallowingRedis(redis_url, fake.clock()),
        MemoryStore(fake.clock(), 1 << 20),
        fake.clock(),
        retry_interval=0.001,
    )
    await store.open()
    assert not store.health().ok
    await asyncio.sleep(0.03)  # the watcher is mid-ping

    await asyncio.wait_for(store.close(), 1)


# -- routes: shared config, Redis only ------------------------------------------------


async def test_routes_are_written_to_redis(store: ResilientStore, direct: RedisStore) -> None:
    assert await store.record_put("routes", "payments", b"route", replace=False)

    assert await direct.records_load("routes") == (
        await store.records_version("routes"),
        {"payments": b"route"},
    )
    assert await direct.record_delete("routes", "payments")
    assert (await store.records_load("routes"))[1] == {}


async def test_while_degraded_routes_raise_and_nothing_is_written_locally(
    server: RedisServer, redis_url: str, direct: RedisStore, fake: FakeClock
) -> None:
    local = MemoryStore(fake.clock(), 1 << 20)
    store = ResilientStore(
        RedisStore(redis_url, fake.clock()), local, fake.clock(), retry_interval=RETRY
    )
    await store.open()
    try:
        await store.record_put("routes", "before", b"route", replace=False)
        server.stop()

        # The first route call finds Redis gone and degrades the store.
        with pytest.raises(StoreUnavailable):
            await store.records_version("routes")
        assert not store.health().ok
        for call in (
            store.records_load("routes"),
            store.record_put("routes", "during", b"route", replace=True),
            store.record_delete("routes", "before"),
        ):
            with pytest.raises(StoreUnavailable) as caught:
                await call
        assert caught.value.message.startswith("redis unreachable: ")
        assert str(server.socket) not in caught.value.message
        assert await local.records_load("routes") == (0, {})

        server.start()  # an empty server: the test one keeps nothing on disk
        await until_healthy(store)
        assert await store.record_put("routes", "after", b"route", replace=False)
        assert (await direct.records_load("routes"))[1] == {"after": b"route"}
    finally:
        await store.close()


async def test_a_store_that_starts_degraded_refuses_route_writes_at_once(
    server: RedisServer, redis_url: str, primary: CountingRedis, fake: FakeClock
) -> None:
    server.stop()
    store = ResilientStore(
        primary, MemoryStore(fake.clock(), 1 << 20), fake.clock(), retry_interval=10.0
    )
    await store.open()
    try:
        async with asyncio.timeout(0.5):
            with pytest.raises(StoreUnavailable):
                await store.record_put("routes", "payments", b"route", replace=False)
        assert primary.route_puts == 0  # no connect attempt: the answer is known
    finally:
        await store.close()


# -- observability: writes and rate limits fall back, reads do not ----------------------


async def test_observability_goes_to_redis_while_it_answers(
    store: ResilientStore, direct: RedisStore, fake: FakeClock
) -> None:
    hour = int(fake.t // 3600)
    await store.events_add([b"e1"])
    await store.requests_put([("req-1", b"record")])
    await store.stats_add(hour, {"requests": 1})
    assert (await store.rate_take("client-a", 1, 60.0)).allowed

    assert [data for _, data in await direct.events_read(None, 5)] == [b"e1"]
    assert await direct.request_get("req-1") == b"record"
    assert await direct.stats_read(hour) == {"requests": 1}
    assert not (await direct.rate_take("client-a", 1, 60.0)).allowed  # one shared bucket
    assert [data for _, data in await store.events_read(None, 5)] == [b"e1"]


async def test_while_degraded_observability_writes_stay_local_and_reads_raise(
    server: RedisServer, redis_url: str, direct: RedisStore, fake: FakeClock
) -> None:
    local = MemoryStore(fake.clock(), 1 << 20)
    store = ResilientStore(
        RedisStore(redis_url, fake.clock()), local, fake.clock(), retry_interval=RETRY
    )
    hour = int(fake.t // 3600)
    await store.open()
    try:
        await store.events_add([b"before"])
        server.stop()

        # The flusher's writes never raise: the first finds Redis gone, the rest stay local.
        await store.events_add([b"during"])
        assert not store.health().ok
        await store.requests_put([("req-1", b"record")])
        await store.stats_add(hour, {"requests": 1})
        assert [data for _, data in await local.events_read(None, 5)] == [b"during"]
        assert await local.request_get("req-1") == b"record"
        assert await local.stats_read(hour) == {"requests": 1}

        # Commands are told the shared state is unavailable, never shown the local part.
        for call in (store.events_read(None, 5), store.request_get("req-1"), store.stats_read(0)):
            with pytest.raises(StoreUnavailable) as caught:
                await call
            assert caught.value.message.startswith("redis unreachable: ")

        # The rate limit goes on with a local bucket.
        assert (await store.rate_take("client-a", 1, 60.0)).allowed
        refused = await store.rate_take("client-a", 1, 60.0)
        assert not refused.allowed and refused.retry_after == pytest.approx(60.0)

        server.start()  # an empty server: the test one keeps nothing on disk
        await until_healthy(store)
        await store.events_add([b"after"])
        assert [data for _, data in await store.events_read(None, 5)] == [b"after"]
        assert (await store.rate_take("client-a", 1, 60.0)).allowed  # Redis's bucket again
    finally:
        await store.close()


# -- policies: every capability has one ---------------------------------------------


def test_every_store_method_has_a_policy() -> None:
    from sidecar.store.base import Store
    from sidecar.store.resilient import FallsBack, SharedOnly
    from sidecar.store.resilient.idempotency import LocalFirstIdempotency
    from sidecar.store.resilient.policies import methods

    falls_back, shared = set(methods(FallsBack)), set(methods(SharedOnly))
    local_first = {name for name in methods(LocalFirstIdempotency) if name.startswith("idem_")}
    lifecycle = {"open", "close"}

    # Each method of Store is in exactly one policy, and ResilientStore has it.
    assert not falls_back & shared and not (falls_back | shared) & local_first
    assert set(methods(Store)) == falls_back | shared | local_first | lifecycle
    for name in methods(Store):
        assert asyncio.iscoroutinefunction(getattr(ResilientStore, name)), name
