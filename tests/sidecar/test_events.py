"""Events (SPEC §8): the model, which outcomes make one, and who emits them.

The EventLog writes to a real MemoryStore; the circuit breaker and the job
workers run for real on it with a FakeClock, their upstream a scripted
callable (the stage and worker tests cover the HTTP side).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest

from sidecar.errors import CircuitOpen, StoreUnavailable, UpstreamFailure
from sidecar.exchange import Exchange, Response
from sidecar.jobs.model import CANCELLED, FAILED, SUCCEEDED, Job, JobRequest
from sidecar.jobs.worker import JobWorkers
from sidecar.observability.events import (
    BREAKER,
    EGRESS_DENIED,
    JOB,
    PCI_BLOCK,
    RESCUE,
    UPSTREAM_ERROR,
    Event,
    EventLog,
    event_for,
    iso_time,
    public_view,
)
from sidecar.observability.observe import Outcome
from sidecar.policy import parse_policy
from sidecar.stages.circuit_breaker import CircuitBreaker
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock

CARD = "4242424242424242"
PATIENCE = 3.0


def outcome(**changes: Any) -> Outcome:
    """A plain 200 through X-Target-URL, with `changes`."""
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "time": 1_700_000_000.5,
        "method": "POST",
        "route": None,
        "host": "api.test",
        "status": 200,
        "attempts": 1,
        "rescue": None,
        "latency": 0.0125,
        "error": None,
        "client_id": "local",
        "exchange": None,
    }
    return Outcome(**(fields | changes))


async def stored(store: MemoryStore) -> list[Event]:
    return [Event.decode(data) for _, data in await store.events_read(None, 100)]


async def until_stored(store: MemoryStore, count: int) -> list[Event]:
    """The stored events once there are `count` (fails after PATIENCE seconds)."""
    async with asyncio.timeout(PATIENCE):
        while True:
            found = await stored(store)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.01)


# -- the model -----------------------------------------------------------------------


def test_an_event_round_trips_and_leaves_out_what_it_lacks() -> None:
    event = Event(
        time=1_700_000_000.25,
        kind=RESCUE,
        reason="retry",
        request_id="r1",
        route="pay",
        host="api.test:8443",
        status=200,
        attempts=3,
        latency_ms=12.5,
    )
    assert Event.decode(event.encode()) == event
    bare = Event(time=5.0, kind=JOB, detail="job-1")
    assert orjson.loads(bare.encode()) == {"time": 5.0, "kind": "job", "detail": "job-1"}
    assert Event.decode(bare.encode()) == bare


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"[1, 2]", b'{"kind": "rescue"}', b'{"time": 1, "status": "x"}']
)
def test_decoding_something_else_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        Event.decode(data)


def test_the_public_view_has_every_field_and_an_iso_utc_time() -> None:
    view = public_view(Event(time=1_700_000_000.25, kind=PCI_BLOCK, reason="pci_card_number"))
    assert view["time"] == "2023-11-14T22:13:20.250Z"
    assert list(view) == [
        "time",
        "kind",
        "reason",
        "request_id",
        "route",
        "host",
        "status",
        "attempts",
        "latency_ms",
        "detail",
    ]
    assert view["request_id"] is None
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"


# -- which outcomes make an event ---------------------------------------------------


@pytest.mark.parametrize("rescue", ["retry", "cache", "failover", "cascade_fallback"])
def test_a_rescue_is_an_event_with_its_reason(rescue: str) -> None:
    event = event_for(outcome(rescue=rescue, attempts=2, route="pay"))
    assert event == Event(
        time=1_700_000_000.5,
        kind=RESCUE,
        reason=rescue,
        request_id="req-1",
        route="pay",
        host="api.test",
        status=200,
        attempts=2,
        latency_ms=12.5,
    )


@pytest.mark.parametrize(
    ("changes", "kind", "reason"),
    [
        ({"error": "pci_card_number", "status": 400, "host": ""}, PCI_BLOCK, "pci_card_number"),
        ({"error": "egress_denied", "status": 403}, EGRESS_DENIED, "egress_denied"),
        ({"error": "upstream_unreachable", "status": 502}, UPSTREAM_ERROR, "upstream_unreachable"),
        ({"error": "upstream_timeout", "status": 504}, UPSTREAM_ERROR, "upstream_timeout"),
        ({"error": "deadline_exceeded", "status": 504}, UPSTREAM_ERROR, "deadline_exceeded"),
        ({"status": 503, "attempts": 3}, UPSTREAM_ERROR, "server_error"),
        ({"status": 500}, UPSTREAM_ERROR, "server_error"),
    ],
)
def test_blocks_denials_and_upstream_failures_are_events(
    changes: dict[str, Any], kind: str, reason: str
) -> None:
    event = event_for(outcome(**changes))
    assert event is not None
    assert (event.kind, event.reason, event.status) == (kind, reason, changes["status"])
    assert event.host == (changes.get("host", "api.test") or None)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"status": 404},
        {"status": 429},
        {"status": 401, "error": "unauthorized"},
        # The sidecar refused without calling: the breaker event says why.
        {"status": 503, "error": "circuit_open"},
        {"status": 400, "error": "bad_header"},
    ],
)
def test_ordinary_answers_make_no_event(changes: dict[str, Any]) -> None:
    assert event_for(outcome(**changes)) is None


def test_an_event_holds_no_body_path_query_or_header() -> None:
    headers = [("authorization", "Bearer sk_live_secret"), ("x-mirapi-key", "mk_secret")]
    exchange = Exchange(
        "POST",
        "/v1/customers/jane.doe@example.com",
        f"card={CARD}&email=jane",
        headers,
        f'{{"card": "{CARD}"}}'.encode(),
        parse_policy({}),
        "req-1",
        target="https://api.test/v1/customers/jane.doe@example.com?card=1",
    )
    for changes in ({"error": "pci_card_number", "status": 400}, {"rescue": "retry"}):
        event = event_for(outcome(exchange=exchange, **changes))
        assert event is not None
        data = event.encode()
        for secret in (CARD, "jane", "sk_live", "mk_secret", "/v1/customers"):
            assert secret.encode() not in data


# -- the log --------------------------------------------------------------------------


async def test_observed_and_emitted_events_reach_the_store_in_order() -> None:
    store = MemoryStore(FakeClock().clock())
    log = EventLog(store, interval=0.01)
    await log.start()
    try:
        log.observe(outcome())  # no event
        log.observe(outcome(rescue="cache", request_id="a"))
        log.emit(Event(time=2.0, kind=BREAKER, reason="open", host="api.test"))
        log.observe(outcome(status=502, error="upstream_unreachable", request_id="b"))
        events = await until_stored(store, 3)
    finally:
        await log.stop()
    assert [(e.kind, e.request_id) for e in events] == [
        (RESCUE, "a"),
        (BREAKER, None),
        (UPSTREAM_ERROR, "b"),
    ]


async def test_stop_writes_what_is_still_queued() -> None:
    store = MemoryStore(FakeClock().clock())
    log = EventLog(store, interval=3600)
    await log.start()
    log.observe(outcome(rescue="retry"))
    assert await stored(store) == []  # not on the request's path
    await log.stop()
    assert [e.reason for e in await stored(store)] == ["retry"]


class LostStore:
    """A store whose every write fails, as a lost Redis would."""

    def __init__(self) -> None:
        self.calls = 0

    async def events_add(self, items: Sequence[bytes]) -> None:
        self.calls += 1
        raise StoreUnavailable("redis unreachable")


async def test_a_lost_store_never_reaches_the_request() -> None:
    store = LostStore()
    log = EventLog(store, interval=3600, limit=2)
    for _ in range(3):
        log.observe(outcome(rescue="retry"))  # neither raises nor blocks
    assert log.dropped == 1  # the queue is bounded
    await log.flush()  # the failing write is swallowed (and logged)
    assert store.calls == 1


# -- breaker transitions -------------------------------------------------------------


class CountingStore(MemoryStore):
    """A MemoryStore that counts the breaker calls made on it."""

    def __init__(self, fake: FakeClock) -> None:
        super().__init__(fake.clock())
        self.breaker_calls = 0

    async def breaker_admit(self, host: str, cooldown: float, probe_lease: float) -> Any:
        self.breaker_calls += 1
        return await super().breaker_admit(host, cooldown, probe_lease)

    async def breaker_record(self, host: str, success: bool, threshold: int) -> Any:
        self.breaker_calls += 1
        return await super().breaker_record(host, success, threshold)

    async def breaker_status(self, host: str) -> Any:
        self.breaker_calls += 1
        return await super().breaker_status(host)


def breaker_exchange(request_id: str) -> Exchange:
    policy = parse_policy({"x-circuit-breaker": "on; threshold=2; cooldown=10s"})
    target = "https://api.test/v1/x?q=secret"
    return Exchange("GET", "/", "", [], b"", policy, request_id, target=target, targets=(target,))


async def answer(breaker: CircuitBreaker, request_id: str, status: int | None) -> None:
    """One attempt: `status` from the upstream, None for a connection failure."""

    async def upstream(_: Exchange) -> Response:
        if status is None:
            raise UpstreamFailure("connect-failure", "scripted")
        return Response(status, [])

    try:
        await breaker(breaker_exchange(request_id), upstream)
    except (UpstreamFailure, CircuitOpen):
        pass


async def test_each_breaker_transition_is_one_event() -> None:
    fake = FakeClock()
    store = CountingStore(fake)
    log = EventLog(store)
    breaker = CircuitBreaker(store, fake.clock(), events=log)

    await answer(breaker, "r1", 500)
    await answer(breaker, "r2", None)  # second failure: opens
    await answer(breaker, "r3", 200)  # refused while open: no event
    fake.advance(10)
    await answer(breaker, "r4", 503)  # the probe fails: open again
    fake.advance(10)
    await answer(breaker, "r5", 200)  # the probe succeeds: closed
    await log.flush()

    events = await stored(store)
    assert [(e.request_id, e.reason, e.detail, e.status) for e in events] == [
        ("r2", "open", "closed->open", None),
        ("r4", "half_open", "open->half_open", None),
        ("r4", "open", "half_open->open", 503),
        ("r5", "half_open", "open->half_open", None),
        ("r5", "closed", "half_open->closed", 200),
    ]
    assert all(e.kind == BREAKER and e.host == "api.test" for e in events)
    assert all(e.time == fake.t for e in events[-2:])


async def test_healthy_requests_cost_no_extra_store_call() -> None:
    fake = FakeClock()
    store = CountingStore(fake)
    log = EventLog(store)
    breaker = CircuitBreaker(store, fake.clock(), events=log)
    for index in range(5):
        await answer(breaker, f"r{index}", 200)
    await log.flush()
    # One admission each, as without events: no record, no status read.
    assert store.breaker_calls == 5
    assert await stored(store) == []


# -- job outcomes ------------------------------------------------------------------


def a_job(job_id: str, now: float) -> Job:
    request = JobRequest(
        "POST", "/v1/charges", "", (("x-target-url", "https://api.test"),), b"amount=1"
    )
    return Job(
        id=job_id,
        request=request,
        callback_url="https://hooks.test/cb",
        created_at=now,
        retry_until=now + 1,  # no time for a second run
        idempotency_key=f"key-{job_id}",
        due_at=now,
    )


class JobRig:
    """Job workers on a memory store; the run's answer and the callback are scripted."""

    def __init__(self) -> None:
        self.fake = FakeClock()
        self.store = MemoryStore(self.fake.clock())
        self.log = EventLog(self.store, interval=0.01)
        self.status = 200
        self.release = asyncio.Event()
        self.release.set()
        self.running = asyncio.Event()
        self.workers = JobWorkers(
            self.store,
            self.run,
            self.deliver,
            self.fake.clock(),
            workers=1,
            lease=60,
            poll=0.02,
            events=self.log,
        )

    async def run(self, exchange: Exchange) -> Response:
        exchange.target = "https://api.test:8443/v1/charges"
        self.running.set()
        await self.release.wait()
        return Response(self.status, [], b"{}")

    async def deliver(self, job: Job) -> int:
        return 200

    async def events(self, count: int) -> list[Event]:
        return await until_stored(self.store, count)


@pytest.fixture
async def rig() -> AsyncIterator[JobRig]:
    made = JobRig()
    await made.log.start()
    made.workers.start()
    try:
        yield made
    finally:
        await made.workers.stop()
        await made.log.stop()


@pytest.mark.parametrize(("status", "reason"), [(201, SUCCEEDED), (400, FAILED), (503, FAILED)])
async def test_a_finished_job_is_an_event(rig: JobRig, status: int, reason: str) -> None:
    rig.status = status
    await rig.store.job_add(a_job("job-1", rig.fake.t))
    rig.workers.wake()
    [event] = await rig.events(1)
    assert (event.kind, event.reason, event.detail) == (JOB, reason, "job-1")
    assert (event.status, event.attempts, event.host) == (status, 1, "api.test:8443")
    assert event.request_id  # the run's request id
    await asyncio.sleep(0.1)  # the callback's delivery makes no second event
    assert len(await stored(rig.store)) == 1


async def test_a_job_cancelled_while_running_is_a_cancelled_event(rig: JobRig) -> None:
    rig.release.clear()
    job = a_job("job-2", rig.fake.t)
    await rig.store.job_add(job)
    rig.workers.wake()
    async with asyncio.timeout(PATIENCE):
        await rig.running.wait()
    # What `mirapi jobs cancel` writes.
    await rig.store.job_save(job.with_(status=CANCELLED, due_at=None, finished_at=rig.fake.t), None)
    rig.release.set()
    [event] = await rig.events(1)
    assert (event.kind, event.reason, event.detail) == (JOB, CANCELLED, "job-2")
