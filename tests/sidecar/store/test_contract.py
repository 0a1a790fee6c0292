"""The behaviour every store backend shares, run against each (conftest `store`).

Time moves on the FakeClock (`fake`); only `idem_wait` waits in real time,
and every such wait here is bounded well under a second.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sidecar.store.base import (
    BreakerState,
    Claim,
    ClaimOutcome,
    Store,
    StoredResponse,
    WaitOutcome,
    WaitResult,
)
from tests.support.clock import FakeClock

HOST = "api.test"
THRESHOLD, COOLDOWN, LEASE = 3, 10.0, 5.0
KEY, PRINT, OTHER_PRINT = "k:order-42", "fp-a", "fp-b"
TTL = 30.0


def response(fake: FakeClock, body: bytes = b'{"ok":true}', ttl: float = 300.0) -> StoredResponse:
    return StoredResponse(
        201, (("content-type", "application/json"), ("x-id", "7")), body, fake.t, fake.t + ttl
    )


# -- StoredResponse ------------------------------------------------------------


def test_encoding_round_trips_binary_bodies_and_headers() -> None:
    entry = StoredResponse(
        200,
        (("content-type", "application/octet-stream"), ("x-note", "café\nsecond"), ("a", "")),
        b"\x00\xff\n\n{binary}\r\n" + bytes(range(256)),
        1000.25,
        1300.5,
    )
    assert StoredResponse.decode(entry.encode()) == entry


def test_encoding_round_trips_an_empty_body() -> None:
    entry = StoredResponse(204, (), b"", 1.0, 2.0)
    assert StoredResponse.decode(entry.encode()) == entry


# -- health --------------------------------------------------------------------


async def test_an_open_store_is_healthy_and_names_its_backend(
    store: Store, request: pytest.FixtureRequest
) -> None:
    health = store.health()
    assert health.ok
    assert health.backend == request.node.callspec.params["store"]


# -- smart cache ---------------------------------------------------------------


async def test_cache_returns_what_was_put(store: Store, fake: FakeClock) -> None:
    entry = response(fake, body=b"\x00binary\xff")
    await store.cache_put("c1", entry)
    assert await store.cache_get("c1") == entry
    assert await store.cache_get("c2") is None


async def test_cache_entry_lives_until_it_expires(store: Store, fake: FakeClock) -> None:
    await store.cache_put("c1", response(fake, ttl=60))
    fake.advance(59)
    assert await store.cache_get("c1") is not None
    fake.advance(1)
    assert await store.cache_get("c1") is None


async def test_cache_put_overwrites(store: Store, fake: FakeClock) -> None:
    await store.cache_put("c1", response(fake, body=b"old"))
    fake.advance(5)
    newer = response(fake, body=b"new")
    await store.cache_put("c1", newer)
    assert await store.cache_get("c1") == newer


async def test_cache_never_returns_an_entry_put_already_expired(
    store: Store, fake: FakeClock
) -> None:
    await store.cache_put("c1", StoredResponse(200, (), b"x", fake.t - 10, fake.t - 1))
    assert await store.cache_get("c1") is None


# -- circuit breaker -------------------------------------------------------------


async def fail(store: Store, times: int, host: str = HOST) -> None:
    for _ in range(times):
        await store.breaker_record(host, False, THRESHOLD)


async def open_breaker(store: Store) -> None:
    await fail(store, THRESHOLD)
    assert (await store.breaker_status(HOST)).state is BreakerState.OPEN


async def test_unknown_host_is_closed_and_admitted(store: Store) -> None:
    status = await store.breaker_status(HOST)
    assert (status.state, status.failures) == (BreakerState.CLOSED, 0)
    admission = await store.breaker_admit(HOST, COOLDOWN, LEASE)
    assert admission.allowed and not admission.probe


async def test_breaker_opens_after_threshold_consecutive_failures(
    store: Store, fake: FakeClock
) -> None:
    for failures in range(1, THRESHOLD):
        status = await store.breaker_record(HOST, False, THRESHOLD)
        assert (status.state, status.failures, status.changed) == (
            BreakerState.CLOSED,
            failures,
            False,
        )
        assert (await store.breaker_admit(HOST, COOLDOWN, LEASE)).allowed
    status = await store.breaker_record(HOST, False, THRESHOLD)
    assert (status.state, status.failures, status.changed) == (BreakerState.OPEN, THRESHOLD, True)
    assert status.opened_at == pytest.approx(fake.t)
    assert (await store.breaker_status(HOST)).state is BreakerState.OPEN


async def test_a_success_resets_the_failure_count(store: Store) -> None:
    await fail(store, THRESHOLD - 1)
    status = await store.breaker_record(HOST, True, THRESHOLD)
    assert (status.state, status.failures, status.changed) == (BreakerState.CLOSED, 0, False)
    await fail(store, THRESHOLD - 1)
    assert (await store.breaker_status(HOST)).state is BreakerState.CLOSED


async def test_open_breaker_refuses_until_the_cooldown_is_over(
    store: Store, fake: FakeClock
) -> None:
    await open_breaker(store)
    admission = await store.breaker_admit(HOST, COOLDOWN, LEASE)
    assert not admission.allowed
    assert admission.retry_after == pytest.approx(COOLDOWN)
    fake.advance(4)
    admission = await store.breaker_admit(HOST, COOLDOWN, LEASE)
    assert not admission.allowed
    assert admission.retry_after == pytest.approx(COOLDOWN - 4)


async def test_a_failure_while_open_does_not_extend_the_cooldown(
    store: Store, fake: FakeClock
) -> None:
    await open_breaker(store)
    opened_at = fake.t
    fake.advance(6)
    status = await store.breaker_record(HOST, False, THRESHOLD)
    assert (status.state, status.changed) == (BreakerState.OPEN, False)
    assert status.opened_at == pytest.approx(opened_at)
    admission = await store.breaker_admit(HOST, COOLDOWN, LEASE)
    assert admission.retry_after == pytest.approx(COOLDOWN - 6)


async def test_after_the_cooldown_exactly_one_probe_is_admitted(
    store: Store, fake: FakeClock
) -> None:
    await open_breaker(store)
    fake.advance(COOLDOWN)
    first = await store.breaker_admit(HOST, COOLDOWN, LEASE)
    assert first.allowed and first.probe
    assert (await store.breaker_status(HOST)).state is BreakerState.HALF_OPEN
    fake.advance(1)
    second = await store.breaker_admit(HOST, COOLDOWN, LEASE)
    assert not second.allowed
    assert second.retry_after == pytest.approx(LEASE - 1)


async def test_concurrent_admits_after_the_cooldown_give_one_probe(
    store: Store, fake: FakeClock
) -> None:
    await open_breaker(store)
    fake.advance(COOLDOWN)
    admissions = await asyncio.gather(
        *(store.breaker_admit(HOST, COOLDOWN, LEASE) for _ in range(6))
    )
    assert sum(a.allowed for a in admissions) == 1
    assert [a.probe for a in admissions if a.allowed] == [True]


async def test_a_lost_probe_lease_admits_a_new_probe(store: Store, fake: FakeClock) -> None:
    await open_breaker(store)
    fake.advance(COOLDOWN)
    assert (await store.breaker_admit(HOST, COOLDOWN, LEASE)).probe
    fake.advance(LEASE)
    again = await store.breaker_admit(HOST, COOLDOWN, LEASE)
    assert again.allowed and again.probe
    assert not (await store.breaker_admit(HOST, COOLDOWN, LEASE)).allowed


async def test_probe_success_closes_the_breaker(store: Store, fake: FakeClock) -> None:
    await open_breaker(store)
    fake.advance(COOLDOWN)
    assert (await store.breaker_admit(HOST, COOLDOWN, LEASE)).probe
    status = await store.breaker_record(HOST, True, THRESHOLD)
    assert (status.state, status.failures, status.changed) == (BreakerState.CLOSED, 0, True)
    admission = await store.breaker_admit(HOST, COOLDOWN, LEASE)
    assert admission.allowed and not admission.probe
    # Counting starts over: one failure does not reopen it.
    assert (await store.breaker_record(HOST, False, THRESHOLD)).state is BreakerState.CLOSED


async def test_probe_failure_reopens_with_a_new_opened_at(store: Store, fake: FakeClock) -> None:
    await open_breaker(store)
    fake.advance(COOLDOWN)
    assert (await store.breaker_admit(HOST, COOLDOWN, LEASE)).probe
    fake.advance(2)
    status = await store.breaker_record(HOST, False, THRESHOLD)
    assert (status.state, status.changed) == (BreakerState.OPEN, True)
    assert status.opened_at == pytest.approx(fake.t)
    admission = await store.breaker_admit(HOST, COOLDOWN, LEASE)
    assert not admission.allowed
    assert admission.retry_after == pytest.approx(COOLDOWN)


async def test_a_success_while_open_closes_and_says_so(store: Store) -> None:
    await open_breaker(store)
    status = await store.breaker_record(HOST, True, THRESHOLD)
    assert (status.state, status.changed) == (BreakerState.CLOSED, True)


async def test_breakers_are_per_host(store: Store) -> None:
    await open_breaker(store)
    await fail(store, 1, host="other.test")
    other = await store.breaker_status("other.test")
    assert (other.state, other.failures) == (BreakerState.CLOSED, 1)
    assert (await store.breaker_admit("other.test", COOLDOWN, LEASE)).allowed


# -- idempotency -------------------------------------------------------------------


async def claim(store: Store, token: str, fingerprint: str = PRINT, ttl: float = TTL) -> Claim:
    return await store.idem_claim(KEY, fingerprint, token, ttl)


async def acquire(store: Store, token: str = "tok-a", ttl: float = TTL) -> None:
    assert (await claim(store, token, ttl=ttl)) == Claim(ClaimOutcome.ACQUIRED, token=token)


def waiting(store: Store, token: str = "tok-a", timeout: float = 2.0) -> asyncio.Task[WaitResult]:
    return asyncio.create_task(store.idem_wait(KEY, token, timeout))


async def test_a_free_key_is_acquired(store: Store) -> None:
    await acquire(store)


async def test_a_second_claim_sees_the_holder_in_flight(store: Store) -> None:
    await acquire(store)
    assert await claim(store, "tok-b") == Claim(ClaimOutcome.IN_FLIGHT, token="tok-a")


async def test_another_fingerprint_on_a_held_key_is_a_mismatch(store: Store) -> None:
    await acquire(store)
    assert (await claim(store, "tok-b", OTHER_PRINT)).outcome is ClaimOutcome.MISMATCH


async def test_six_concurrent_claims_acquire_once(store: Store) -> None:
    claims = await asyncio.gather(*(claim(store, f"tok-{n}") for n in range(6)))
    winners = [c for c in claims if c.outcome is ClaimOutcome.ACQUIRED]
    assert len(winners) == 1
    losers = [c for c in claims if c is not winners[0]]
    assert all(c == Claim(ClaimOutcome.IN_FLIGHT, token=winners[0].token) for c in losers)


async def test_keys_are_independent(store: Store) -> None:
    await acquire(store)
    other = await store.idem_claim("k:other", PRINT, "tok-b", TTL)
    assert other.outcome is ClaimOutcome.ACQUIRED


async def test_a_kept_response_is_replayed_until_keep_until(store: Store, fake: FakeClock) -> None:
    await acquire(store)
    answer = response(fake, body=b"\x89PNG\r\n\x1a\n")
    await store.idem_finish(KEY, "tok-a", answer, keep_until=fake.t + 100)
    replay = await claim(store, "tok-b")
    assert replay.outcome is ClaimOutcome.COMPLETED
    assert replay.record == answer
    assert (await claim(store, "tok-c", OTHER_PRINT)).outcome is ClaimOutcome.MISMATCH
    fake.advance(99)
    assert (await claim(store, "tok-d")).outcome is ClaimOutcome.COMPLETED
    fake.advance(1)
    assert await claim(store, "tok-e", OTHER_PRINT) == Claim(ClaimOutcome.ACQUIRED, token="tok-e")


async def test_finish_without_keep_frees_the_key_and_shares_with_waiters(
    store: Store, fake: FakeClock
) -> None:
    await acquire(store)
    assert (await claim(store, "tok-b")).token == "tok-a"
    waiter = waiting(store)
    await asyncio.sleep(0.02)
    answer = response(fake)
    await store.idem_finish(KEY, "tok-a", answer, keep_until=None)
    async with asyncio.timeout(1):
        assert await waiter == WaitResult(WaitOutcome.SHARED, answer)
    # A computed key never replays: the next claim makes its own call.
    await acquire(store, "tok-c")


async def test_a_waiter_arriving_after_the_finish_still_gets_the_response(
    store: Store, fake: FakeClock
) -> None:
    await acquire(store)
    assert (await claim(store, "tok-b")).outcome is ClaimOutcome.IN_FLIGHT
    answer = response(fake)
    await store.idem_finish(KEY, "tok-a", answer, keep_until=fake.t + 100)
    async with asyncio.timeout(1):
        assert await store.idem_wait(KEY, "tok-a", 0.5) == WaitResult(WaitOutcome.SHARED, answer)


async def test_finish_without_a_response_tells_waiters_to_call_themselves(
    store: Store, fake: FakeClock
) -> None:
    await acquire(store)
    assert (await claim(store, "tok-b")).outcome is ClaimOutcome.IN_FLIGHT
    waiters = [waiting(store), waiting(store)]
    await asyncio.sleep(0.02)
    await store.idem_finish(KEY, "tok-a", None, keep_until=fake.t + 100)
    async with asyncio.timeout(1):
        assert await asyncio.gather(*waiters) == [WaitResult(WaitOutcome.UNSHARED)] * 2
    # Nothing to replay: the key is free.
    await acquire(store, "tok-c")


async def test_keep_until_in_the_past_keeps_nothing(store: Store, fake: FakeClock) -> None:
    await acquire(store)
    await store.idem_finish(KEY, "tok-a", response(fake), keep_until=fake.t - 1)
    await acquire(store, "tok-b")


async def test_renew_extends_the_lock(store: Store, fake: FakeClock) -> None:
    await acquire(store, ttl=10)
    fake.advance(8)
    assert await store.idem_renew(KEY, "tok-a", 10)
    fake.advance(8)
    assert await claim(store, "tok-b") == Claim(ClaimOutcome.IN_FLIGHT, token="tok-a")


async def test_only_the_holder_may_renew(store: Store) -> None:
    await acquire(store)
    assert not await store.idem_renew(KEY, "tok-b", TTL)
    assert not await store.idem_renew("k:never-claimed", "tok-a", TTL)


async def test_an_expired_lock_is_fenced_off_from_its_old_holder(
    store: Store, fake: FakeClock
) -> None:
    await acquire(store, "tok-a", ttl=10)
    fake.advance(10)
    assert not await store.idem_renew(KEY, "tok-a", 10)
    await acquire(store, "tok-b", ttl=10)
    # The old holder finishes late: the new holder's lock stands, nothing is kept.
    await store.idem_finish(KEY, "tok-a", response(fake), keep_until=fake.t + 100)
    assert await claim(store, "tok-c") == Claim(ClaimOutcome.IN_FLIGHT, token="tok-b")
    assert await store.idem_renew(KEY, "tok-b", 10)
    await store.idem_finish(KEY, "tok-b", None, keep_until=None)
    await acquire(store, "tok-d")


async def test_a_kept_record_outlives_the_lock(store: Store, fake: FakeClock) -> None:
    await acquire(store)
    await store.idem_finish(KEY, "tok-a", response(fake), keep_until=fake.t + 100)
    fake.advance(TTL + 1)  # the lock would have expired; the record still answers
    assert (await claim(store, "tok-b", OTHER_PRINT)).outcome is ClaimOutcome.MISMATCH


async def test_a_waiter_gets_lost_when_the_holders_lock_expires(
    store: Store, fake: FakeClock
) -> None:
    await acquire(store, ttl=10)
    assert (await claim(store, "tok-b")).outcome is ClaimOutcome.IN_FLIGHT
    waiter = waiting(store, timeout=5)
    await asyncio.sleep(0.02)
    assert not waiter.done()
    fake.advance(10)
    async with asyncio.timeout(1):
        assert await waiter == WaitResult(WaitOutcome.LOST)


async def test_a_wait_gives_up_after_its_timeout(store: Store) -> None:
    await acquire(store)
    assert (await claim(store, "tok-b")).outcome is ClaimOutcome.IN_FLIGHT
    started = time.monotonic()
    assert await store.idem_wait(KEY, "tok-a", 0.1) == WaitResult(WaitOutcome.LOST)
    assert 0.09 <= time.monotonic() - started < 1


async def test_waiting_on_a_token_that_holds_nothing_is_lost_at_once(store: Store) -> None:
    async with asyncio.timeout(0.5):
        assert await store.idem_wait(KEY, "tok-z", 5) == WaitResult(WaitOutcome.LOST)


async def test_admission_is_clean_only_with_no_failure_counted(store: Store) -> None:
    assert (await store.breaker_admit(HOST, COOLDOWN, LEASE)).clean
    await store.breaker_record(HOST, False, THRESHOLD)
    counted = await store.breaker_admit(HOST, COOLDOWN, LEASE)
    assert counted.allowed and not counted.clean
    await store.breaker_record(HOST, True, THRESHOLD)
    assert (await store.breaker_admit(HOST, COOLDOWN, LEASE)).clean
