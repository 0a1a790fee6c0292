"""What only the Redis backend does: key layout, server-side expiry, failure
wrapping, and state shared by sidecars on one server.

The behaviour every backend shares is in test_contract.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from sidecar.errors import StoreUnavailable
from sidecar.store.base import (
    EVENTS_MAX,
    REQUESTS_MAX,
    STATS_KEEP_HOURS,
    BreakerState,
    ClaimOutcome,
    StoredResponse,
    WaitOutcome,
)
from sidecar.store.redis import GC_GRACE, REQUEST_TTL, RESULT_TTL, RedisStore
from tests.support.clock import FakeClock
from tests.support.redis import RedisServer


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(redis_url: str, fake: FakeClock) -> AsyncIterator[RedisStore]:
    backend = RedisStore(redis_url, fake.clock())
    await backend.open()
    yield backend
    await backend.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the private server, to look at what the store wrote."""
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


def response(fake: FakeClock, ttl: float = 300.0, body: bytes = b'{"ok":true}') -> StoredResponse:
    return StoredResponse(200, (("content-type", "application/json"),), body, fake.t, fake.t + ttl)


async def keys(raw: aioredis.Redis) -> set[str]:
    return {key.decode() for key in await raw.keys("*")}


async def test_keys_are_namespaced_and_share_one_hash_tag_per_key(
    store: RedisStore, raw: aioredis.Redis, fake: FakeClock
) -> None:
    await store.cache_put("c1", response(fake))
    await store.breaker_record("api.example.com", success=False, threshold=5)
    await store.idem_claim("pay-1", "fp", "tok-a", lock_ttl=60)
    await store.idem_claim("pay-2", "fp", "tok-b", lock_ttl=60)
    await store.idem_claim("pay-2", "fp", "waiter", lock_ttl=60)  # told tok-b: in flight
    await store.idem_finish("pay-2", "tok-b", response(fake), keep_until=fake.t + 3600)
    await store.idem_claim("pay-3", "fp", "tok-c", lock_ttl=60)  # nobody waits for tok-c
    await store.idem_finish("pay-3", "tok-c", response(fake), keep_until=None)

    assert await keys(raw) == {
        "mirapi:cache:{c1}",
        "mirapi:breaker:{api.example.com}",
        "mirapi:idem:{pay-1}:lock",
        "mirapi:idem:{pay-2}:rec",
        "mirapi:idem:{pay-2}:res:tok-b",
    }
    # A cluster would keep every key of one operation in one slot.
    assert key_slot(b"mirapi:idem:{pay-2}:rec") == key_slot(b"mirapi:idem:{pay-2}:res:tok-b")
    assert key_slot(b"mirapi:idem:{pay-2}:rec") == key_slot(b"mirapi:idem:{pay-2}:lock")


@pytest.mark.parametrize("awkward", ["", "a}b{c", "{x}", "sha256:abc", "ключ", "k" * 500])
async def test_awkward_keys_get_a_digest_tag_and_still_work(
    store: RedisStore, raw: aioredis.Redis, fake: FakeClock, awkward: str
) -> None:
    claim = await store.idem_claim(awkward, "fp", "tok", lock_ttl=60)
    await store.idem_finish(awkward, "tok", response(fake), keep_until=fake.t + 60)

    assert claim.outcome is ClaimOutcome.ACQUIRED
    replay = await store.idem_claim(awkward, "fp", "tok2", lock_ttl=60)
    assert replay.outcome is ClaimOutcome.COMPLETED
    written = await keys(raw)
    assert all(key.startswith("mirapi:idem:{sha256:") for key in written), written
    assert len({key_slot(key.encode()) for key in written}) == 1
    # A plain key that looks like a digest tag does not reach the awkward one's record.
    tag = min(written).split("{", 1)[1].split("}", 1)[0]
    other = await store.idem_claim(tag, "fp", "t", 60)
    assert other.outcome is ClaimOutcome.ACQUIRED


async def test_namespace_separates_installs_on_one_server(
    store: RedisStore, redis_url: str, fake: FakeClock
) -> None:
    other = RedisStore(redis_url, fake.clock(), namespace="staging")
    await store.cache_put("k", response(fake))
    try:
        assert await other.cache_get("k") is None
    finally:
        await other.close()


async def test_server_side_expiry_is_a_little_past_the_logical_one(
    store: RedisStore, raw: aioredis.Redis, fake: FakeClock
) -> None:
    await store.cache_put("c", response(fake, ttl=300))
    await store.idem_claim("held", "fp", "tok", lock_ttl=60)
    await store.idem_claim("done", "fp", "tok2", lock_ttl=60)
    await store.idem_claim("done", "fp", "waiter", lock_ttl=60)
    await store.idem_finish("done", "tok2", response(fake), keep_until=fake.t + 3600)

    def around(expected: float) -> tuple[int, int]:
        return (int((expected - 1) * 1000), int(expected * 1000))

    pttl = {key: await raw.pttl(key) for key in await keys(raw)}
    low, high = around(300 + GC_GRACE)
    assert low <= pttl["mirapi:cache:{c}"] <= high
    low, high = around(60 + GC_GRACE)
    assert low <= pttl["mirapi:idem:{held}:lock"] <= high
    low, high = around(3600 + GC_GRACE)
    assert low <= pttl["mirapi:idem:{done}:rec"] <= high
    low, high = around(RESULT_TTL + GC_GRACE)
    assert low <= pttl["mirapi:idem:{done}:res:tok2"] <= high


async def test_the_clock_not_the_server_decides_expiry(
    store: RedisStore, raw: aioredis.Redis, fake: FakeClock
) -> None:
    await store.cache_put("c", response(fake, ttl=300))
    fake.advance(301)

    assert await store.cache_get("c") is None
    assert await raw.exists("mirapi:cache:{c}") == 1  # left for the server to collect


async def test_an_already_expired_entry_is_not_written(
    store: RedisStore, raw: aioredis.Redis, fake: FakeClock
) -> None:
    await store.cache_put("c", response(fake, ttl=-1))
    assert await keys(raw) == set()


async def test_two_sidecars_on_one_server_share_breakers(
    store: RedisStore, redis_url: str, fake: FakeClock
) -> None:
    other = RedisStore(redis_url, fake.clock())
    try:
        for _ in range(3):
            await store.breaker_record("api.example.com", success=False, threshold=3)
        admission = await other.breaker_admit("api.example.com", cooldown=30, probe_lease=5)
        assert not admission.allowed
        assert admission.retry_after == pytest.approx(30)
        assert (await other.breaker_status("api.example.com")).state is BreakerState.OPEN
    finally:
        await other.close()


async def test_two_sidecars_on_one_server_share_the_cache(
    store: RedisStore, redis_url: str, fake: FakeClock
) -> None:
    other = RedisStore(redis_url, fake.clock())
    try:
        await store.cache_put("k", response(fake, body=b"shared"))
        entry = await other.cache_get("k")
        assert entry is not None and entry.body == b"shared"
    finally:
        await other.close()


async def test_a_waiter_on_another_sidecar_gets_the_holders_response(
    store: RedisStore, redis_url: str, fake: FakeClock
) -> None:
    other = RedisStore(redis_url, fake.clock())
    try:
        assert (await store.idem_claim("k", "fp", "holder", 60)).outcome is ClaimOutcome.ACQUIRED
        claim = await other.idem_claim("k", "fp", "waiter", 60)
        assert (claim.outcome, claim.token) == (ClaimOutcome.IN_FLIGHT, "holder")

        waiting = asyncio.ensure_future(other.idem_wait("k", claim.token, timeout=5))
        await asyncio.sleep(0.03)
        assert not waiting.done()
        started = time.monotonic()
        await store.idem_finish("k", "holder", response(fake, body=b"once"), keep_until=None)
        result = await asyncio.wait_for(waiting, 1)

        assert result.outcome is WaitOutcome.SHARED
        assert result.response is not None and result.response.body == b"once"
        assert time.monotonic() - started < 0.3  # polling backs off to 100 ms at most
    finally:
        await other.close()


async def test_wait_gives_up_after_the_real_time_timeout(store: RedisStore) -> None:
    await store.idem_claim("k", "fp", "holder", lock_ttl=60)
    started = time.monotonic()

    result = await store.idem_wait("k", "holder", timeout=0.15)

    assert result.outcome is WaitOutcome.LOST
    assert 0.14 <= time.monotonic() - started < 0.5


async def test_unreachable_server_fails_fast_with_a_safe_message(fake: FakeClock) -> None:
    # Loopback port 1: nothing listens there, so the connection is refused.
    store = RedisStore("redis://:s3cret-pw@127.0.0.1:1/0", fake.clock())
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await store.cache_get("k")
    assert time.monotonic() - started < 1.5
    assert caught.value.status == 503
    assert "s3cret-pw" not in caught.value.message
    assert "127.0.0.1" not in caught.value.message
    health = store.health()
    assert not health.ok and health.reason == caught.value.message
    assert "redis unreachable" in caught.value.message
    await store.close()


async def test_missing_socket_is_store_unavailable(fake: FakeClock, tmp_path: object) -> None:
    store = RedisStore(f"unix://{tmp_path}/no.sock", fake.clock())
    with pytest.raises(StoreUnavailable, match="socket not found") as caught:
        await store.open()
    assert str(tmp_path) not in caught.value.message
    await store.close()


async def test_wrong_password_is_store_unavailable_without_the_password(
    redis_server: RedisServer, raw: aioredis.Redis, fake: FakeClock
) -> None:
    await raw.config_set("requirepass", "right-pass")
    store = RedisStore(f"unix://:wr0ng-pass@{redis_server.socket}", fake.clock())
    try:
        with pytest.raises(StoreUnavailable, match="authentication failed") as caught:
            await store.ping()
    finally:
        await raw.execute_command("AUTH", "right-pass")
        await raw.config_set("requirepass", "")
        await store.close()
    assert "wr0ng-pass" not in caught.value.message
    assert "wr0ng-pass" not in (store.health().reason or "")


def test_a_malformed_url_is_refused_without_echoing_it(fake: FakeClock) -> None:
    with pytest.raises(ValueError) as caught:
        RedisStore("redis://:s3cret-pw@host:notaport/0", fake.clock())
    assert "s3cret-pw" not in str(caught.value)


async def test_reconnects_by_itself_when_the_server_returns(
    store: RedisStore, redis_server: RedisServer, fake: FakeClock
) -> None:
    await store.ping()
    redis_server.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await store.idem_claim("k", "fp", "tok", 60)
        assert not store.health().ok
    finally:
        redis_server.start()

    # Same store object: the pool replaces its dead connections and the
    # scripts the restarted server forgot are loaded again.
    claim = await store.idem_claim("k", "fp", "tok", 60)
    assert claim.outcome is ClaimOutcome.ACQUIRED
    assert store.health().ok


# -- routes ------------------------------------------------------------------------


async def test_routes_live_in_one_slot_and_never_expire(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    await store.record_put("routes", "payments", b"route", replace=False)
    await store.record_put("routes", "a}b{c", b"awkward name", replace=False)

    assert await keys(raw) == {"mirapi:routes:{routes}", "mirapi:routes:{routes}:version"}
    assert key_slot(b"mirapi:routes:{routes}") == key_slot(b"mirapi:routes:{routes}:version")
    assert await raw.ttl("mirapi:routes:{routes}") == -1
    assert await raw.ttl("mirapi:routes:{routes}:version") == -1
    assert await raw.hgetall("mirapi:routes:{routes}") == {
        b"payments": b"route",
        b"a}b{c": b"awkward name",
    }


async def test_routes_of_another_namespace_are_apart(
    store: RedisStore, redis_url: str, fake: FakeClock
) -> None:
    staging = RedisStore(redis_url, fake.clock(), namespace="staging")
    try:
        await store.record_put("routes", "payments", b"prod", replace=False)
        assert (await staging.records_load("routes"))[1] == {}
        assert await staging.record_put("routes", "payments", b"staging", replace=False)
        assert (await store.records_load("routes"))[1] == {"payments": b"prod"}
    finally:
        await staging.close()


async def test_a_flushed_server_does_not_bring_back_an_old_version(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    for name in ("a", "b", "c"):
        await store.record_put("routes", name, b"route", replace=False)
    held = await store.records_version("routes")  # what a sidecar's table would hold
    await raw.flushall()

    assert await store.records_load("routes") == (0, {})
    for name in ("x", "y", "z"):  # as many writes as before the flush
        await store.record_put("routes", name, b"route", replace=False)
    assert await store.records_version("routes") > held


async def test_a_route_write_to_an_unreachable_server_raises(
    fake: FakeClock, tmp_path: Path
) -> None:
    gone = RedisStore(f"unix://{tmp_path}/none.sock", fake.clock())
    try:
        with pytest.raises(StoreUnavailable):
            await gone.record_put("routes", "payments", b"route", replace=False)
        with pytest.raises(StoreUnavailable):
            await gone.records_version("routes")
    finally:
        await gone.close()


# -- observability: events, request records, stats, rate limits -----------------------


async def test_observability_keys_and_their_expiry(
    store: RedisStore, raw: aioredis.Redis, fake: FakeClock
) -> None:
    hour = int(fake.t // 3600)
    await store.events_add([b"e1"])
    await store.requests_put([("req-1", b"record")])
    await store.stats_add(hour, {"requests": 1})
    await store.rate_take("client-a", 10, 60.0)

    assert await keys(raw) == {
        "mirapi:events:{events}",
        "mirapi:requests:{requests}",
        "mirapi:requests:{requests}:req-1",
        f"mirapi:stats:{{stats}}:{hour}",
        "mirapi:rate:{client-a}",
    }
    assert await raw.ttl("mirapi:events:{events}") == -1  # bounded by length instead
    week = int(REQUEST_TTL)
    assert week - 5 <= await raw.ttl("mirapi:requests:{requests}:req-1") <= week
    assert week - 5 <= await raw.ttl("mirapi:requests:{requests}") <= week
    keep = (STATS_KEEP_HOURS + 1) * 3600
    assert keep - 5 <= await raw.ttl(f"mirapi:stats:{{stats}}:{hour}") <= keep
    # A bucket is gone once it would be full again anyway (60 s), plus the grace.
    assert 60_000 <= await raw.pttl("mirapi:rate:{client-a}") <= (60 + GC_GRACE) * 1000
    assert key_slot(b"mirapi:requests:{requests}") == key_slot(b"mirapi:requests:{requests}:x")


async def test_the_stream_is_trimmed_to_exactly_events_max(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    await store.events_add([b"%d" % i for i in range(EVENTS_MAX + 7)])

    assert await raw.xlen("mirapi:events:{events}") == EVENTS_MAX
    assert await raw.zcard("mirapi:requests:{requests}") == 0


async def test_trimmed_request_records_are_deleted(store: RedisStore, raw: aioredis.Redis) -> None:
    await store.requests_put([(f"r{i}", b"x") for i in range(REQUESTS_MAX + 3)])

    assert await raw.zcard("mirapi:requests:{requests}") == REQUESTS_MAX
    assert len(await keys(raw)) == REQUESTS_MAX + 1  # the records and their index
    assert not await raw.exists("mirapi:requests:{requests}:r2")


async def test_two_sidecars_on_one_server_share_the_event_log(
    store: RedisStore, redis_url: str, fake: FakeClock
) -> None:
    other = RedisStore(redis_url, fake.clock())
    try:
        await store.events_add([b"from-a"])
        await other.events_add([b"from-b"])
        [(first, _), (second, data)] = await other.events_read(None, 10)
        assert data == b"from-b"

        # A cursor read from one sidecar follows the log on the other.
        await store.events_add([b"from-a-again"])
        assert [d for _, d in await store.events_read(first, 10)] == [b"from-b", b"from-a-again"]
        assert [d for _, d in await other.events_read(second, 10)] == [b"from-a-again"]
    finally:
        await other.close()


async def test_two_sidecars_on_one_server_share_records_and_stats(
    store: RedisStore, redis_url: str, fake: FakeClock
) -> None:
    other = RedisStore(redis_url, fake.clock())
    hour = int(fake.t // 3600)
    try:
        await store.requests_put([("req-1", b"from-a")])
        await store.stats_add(hour, {"requests": 2, "capital:usd": 2000})
        await other.stats_add(hour, {"requests": 1, "capital:usd": 500})

        assert await other.request_get("req-1") == b"from-a"
        assert await store.stats_read(hour) == {"requests": 3, "capital:usd": 2500}
    finally:
        await other.close()


async def test_two_sidecars_on_one_server_share_rate_buckets(
    store: RedisStore, redis_url: str, fake: FakeClock
) -> None:
    other = RedisStore(redis_url, fake.clock())
    try:
        assert (await store.rate_take("client-a", 2, 60.0)).remaining == 1
        assert (await other.rate_take("client-a", 2, 60.0)).remaining == 0
        refused = await store.rate_take("client-a", 2, 60.0)
        assert not refused.allowed
        assert refused.retry_after == pytest.approx(30.0)
    finally:
        await other.close()


async def test_a_bad_cursor_is_refused_before_reaching_redis(
    fake: FakeClock, tmp_path: Path
) -> None:
    gone = RedisStore(f"unix://{tmp_path}/none.sock", fake.clock())
    try:
        for cursor in ("12", "1-2-3", "(1-0", "1-x", "\uff11-0"):  # a fullwidth digit too
            with pytest.raises(ValueError, match="cursor"):
                await gone.events_read(cursor, 10)
    finally:
        await gone.close()


async def test_observability_on_an_unreachable_server_raises(
    fake: FakeClock, tmp_path: Path
) -> None:
    gone = RedisStore(f"unix://{tmp_path}/none.sock", fake.clock())
    try:
        for call in (
            gone.events_add([b"e1"]),
            gone.events_read(None, 10),
            gone.requests_put([("req-1", b"x")]),
            gone.request_get("req-1"),
            gone.stats_add(1, {"requests": 1}),
            gone.stats_read(0),
            gone.rate_take("client-a", 1, 1.0),
        ):
            with pytest.raises(StoreUnavailable):
                await call
    finally:
        await gone.close()
