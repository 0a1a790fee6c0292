"""The circuit breaker stage directly, on the memory store, with a fake clock."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from sidecar.errors import CircuitOpen, StoreUnavailable, UpstreamFailure
from sidecar.exchange import Exchange, Next, Response
from sidecar.policy import parse_policy
from sidecar.stages.cascade import Cascade
from sidecar.stages.circuit_breaker import CircuitBreaker
from sidecar.stages.retry import Retry
from sidecar.stages.smart_cache import SmartCache
from sidecar.store.base import BreakerState, BreakerStatus, Store
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock

BREAKER = "on; threshold=3; cooldown=10s"


def exchange(breaker: str | None = BREAKER, target: str = "https://api.test/v1/x") -> Exchange:
    headers = {"x-timeout": "5s"}
    if breaker is not None:
        headers["x-circuit-breaker"] = breaker
    policy = parse_policy(headers)
    return Exchange("GET", "/", "", [], b"", policy, "rid", target=target, targets=(target,))


class Upstream:
    """A scripted upstream that counts its calls; an int answers, a str fails."""

    def __init__(self, *outcomes: int | str) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self, _: Exchange) -> Response:
        self.calls += 1
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, str):
            raise UpstreamFailure(outcome, "scripted")
        return Response(outcome, [])


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(fake: FakeClock) -> Store:
    return MemoryStore(fake.clock(), 1 << 20)


@pytest.fixture
def breaker(store: Store, fake: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(store, fake.clock())


async def attempt(breaker: CircuitBreaker, call_next: Next, ex: Exchange | None = None) -> int:
    """The status one attempt ends with: the upstream's, 503 when refused, 0 when it failed."""
    try:
        return (await breaker(ex or exchange(), call_next)).status
    except CircuitOpen:
        return 503
    except UpstreamFailure:
        return 0


async def test_opens_after_threshold_failures_then_fails_fast(breaker: CircuitBreaker) -> None:
    upstream = Upstream(500, "connect-failure", 503)
    assert [await attempt(breaker, upstream) for _ in range(3)] == [500, 0, 503]
    assert upstream.calls == 3
    ex = exchange()
    with pytest.raises(CircuitOpen) as refused:
        await breaker(ex, upstream)
    assert upstream.calls == 3
    assert refused.value.status == 503
    assert refused.value.retry_after == 10
    assert "api.test" in refused.value.message
    assert ex.attempt_log == [("https://api.test/v1/x", "circuit_open", 0.0)]


async def test_retry_after_counts_down_with_the_cooldown(
    breaker: CircuitBreaker, fake: FakeClock
) -> None:
    upstream = Upstream(500)
    for _ in range(3):
        await attempt(breaker, upstream)
    fake.advance(7.5)
    with pytest.raises(CircuitOpen) as refused:
        await breaker(exchange(), upstream)
    assert refused.value.retry_after == 3


async def test_a_success_resets_the_consecutive_count(breaker: CircuitBreaker) -> None:
    upstream = Upstream(500, 500, 200, 500, 500, 200)
    statuses = [await attempt(breaker, upstream) for _ in range(6)]
    assert statuses == [500, 500, 200, 500, 500, 200]


@pytest.mark.parametrize("status", [400, 404, 409, 429])
async def test_client_errors_and_429_are_not_failures(
    breaker: CircuitBreaker, store: Store, status: int
) -> None:
    upstream = Upstream(status)
    for _ in range(5):
        assert await attempt(breaker, upstream) == status
    assert upstream.calls == 5
    assert (await store.breaker_status("api.test")).state is BreakerState.CLOSED


async def test_half_open_lets_one_probe_through_and_its_success_closes(
    breaker: CircuitBreaker, store: Store, fake: FakeClock
) -> None:
    for _ in range(3):
        await attempt(breaker, Upstream(500))
    fake.advance(10)
    probe_started, release = asyncio.Event(), asyncio.Event()
    others = Upstream(200)

    async def slow_success(_: Exchange) -> Response:
        probe_started.set()
        await release.wait()
        return Response(200, [])

    async with asyncio.TaskGroup() as group:
        probe = group.create_task(breaker(exchange(), slow_success))
        await probe_started.wait()
        # The probe is in flight: everyone else still fails fast.
        assert await attempt(breaker, others) == 503
        assert others.calls == 0
        release.set()
    assert probe.result().status == 200
    assert (await store.breaker_status("api.test")).state is BreakerState.CLOSED
    assert [await attempt(breaker, others) for _ in range(2)] == [200, 200]


async def test_a_failed_probe_reopens_for_a_full_cooldown(
    breaker: CircuitBreaker, store: Store, fake: FakeClock
) -> None:
    for _ in range(3):
        await attempt(breaker, Upstream(500))
    fake.advance(10)
    probe = Upstream("timeout")
    assert await attempt(breaker, probe) == 0
    assert probe.calls == 1
    assert (await store.breaker_status("api.test")).state is BreakerState.OPEN
    fake.advance(9)
    with pytest.raises(CircuitOpen):
        await breaker(exchange(), probe)
    assert probe.calls == 1


async def test_a_probe_whose_request_died_makes_way_after_its_lease(
    breaker: CircuitBreaker, fake: FakeClock
) -> None:
    for _ in range(3):
        await attempt(breaker, Upstream(500))
    fake.advance(10)
    hang = asyncio.Event()
    started = asyncio.Event()

    async def never(_: Exchange) -> Response:
        started.set()
        await hang.wait()
        raise AssertionError("unreachable")

    task = asyncio.ensure_future(breaker(exchange(), never))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    upstream = Upstream(200)
    assert await attempt(breaker, upstream) == 503
    fake.advance(5)  # the probe's lease is its X-Timeout
    assert await attempt(breaker, upstream) == 200


async def test_cancellation_records_nothing(breaker: CircuitBreaker, store: Store) -> None:
    one = "on; threshold=1"

    async def cancelled(_: Exchange) -> Response:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await breaker(exchange(one), cancelled)
    assert (await store.breaker_status("api.test")).failures == 0
    assert await attempt(breaker, Upstream(200), exchange(one)) == 200


async def test_hosts_are_separate(breaker: CircuitBreaker) -> None:
    for _ in range(3):
        await attempt(breaker, Upstream(500))
    other = exchange(target="https://other.test:8443/v1/x")
    assert await attempt(breaker, Upstream(200), other) == 200
    same_host = exchange(target="https://api.test:443/v2/y?z=1")
    assert await attempt(breaker, Upstream(200), same_host) == 503


async def test_off_without_the_header(breaker: CircuitBreaker, store: Store) -> None:
    upstream = Upstream(500)
    for _ in range(10):
        assert await attempt(breaker, upstream, exchange(None)) == 500
    assert (await store.breaker_status("api.test")).failures == 0


class BrokenStore(MemoryStore):
    async def breaker_admit(self, host: str, cooldown: float, probe_lease: float):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("store down")

    async def breaker_record(self, host: str, success: bool, threshold: int):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("store down")


async def test_fails_open_when_the_store_is_down(fake: FakeClock) -> None:
    breaker = CircuitBreaker(BrokenStore(fake.clock(), 1 << 20), fake.clock())
    upstream = Upstream(500)
    assert [await attempt(breaker, upstream) for _ in range(5)] == [500] * 5
    assert upstream.calls == 5


async def test_an_opening_circuit_stops_the_retries(store: Store, fake: FakeClock) -> None:
    upstream = Upstream(503)
    breaker = CircuitBreaker(store, fake.clock())

    async def through_breaker(ex: Exchange) -> Response:
        return await breaker(ex, upstream)

    policy = parse_policy(
        {"x-circuit-breaker": "on; threshold=2", "x-retry-count": "5", "x-retry-delay": "1ms"}
    )
    ex = Exchange("GET", "/", "", [], b"", policy, "rid", target="https://api.test/")
    with pytest.raises(CircuitOpen):
        await Retry(fake.clock())(ex, through_breaker)
    assert upstream.calls == 2
    assert [outcome for _, outcome, _ in ex.attempt_log] == ["503", "503", "circuit_open"]


async def test_an_open_circuit_is_rescued_by_the_cache_else_answered_503(
    store: Store, fake: FakeClock
) -> None:
    clock = fake.clock()
    stages = [SmartCache(store, clock, 1024), Cascade(), Retry(clock), CircuitBreaker(store, clock)]
    upstream = Upstream(200, 500)
    handler: Next = upstream
    for stage in reversed(stages):
        handler = partial(stage, call_next=handler)

    def request(cache: bool) -> Exchange:
        headers = {"x-circuit-breaker": "on; threshold=1", "x-smart-cache": "1m"}
        if not cache:
            del headers["x-smart-cache"]
        policy = parse_policy(headers)
        target = "https://api.test/v1/x"
        return Exchange("GET", "/", "", [], b"", policy, "rid", targets=(target,))

    assert (await handler(request(cache=True))).status == 200
    rescued = request(cache=True)
    assert (await handler(rescued)).status == 200  # the 500 opened the circuit
    assert rescued.rescue == "cache"
    assert upstream.calls == 2
    fast = request(cache=True)
    assert (await handler(fast)).status == 200
    assert fast.rescue == "cache"
    assert upstream.calls == 2
    with pytest.raises(CircuitOpen) as refused:
        await handler(request(cache=False))
    assert refused.value.retry_after == 30


async def test_a_healthy_host_costs_no_record_call() -> None:
    fake = FakeClock()
    calls: list[str] = []

    class CountingStore(MemoryStore):
        async def breaker_record(self, host: str, success: bool, threshold: int) -> BreakerStatus:
            calls.append("record")
            return await super().breaker_record(host, success, threshold)

    stage = CircuitBreaker(CountingStore(fake.clock()), fake.clock())
    request = exchange("on")

    async def ok(_: Exchange) -> Response:
        return Response(200, [])

    await stage(request, ok)
    await stage(exchange("on"), ok)
    assert calls == []
