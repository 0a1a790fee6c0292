"""The idempotency capability, the same on every backend (conftest `store`),
the resilient store with Redis lost included (its keys then live locally).

Time moves on the FakeClock (`fake`); only `idem_wait` waits in real time,
and every such wait here is bounded well under a second.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sidecar.store.base import (
    Claim,
    ClaimOutcome,
    Store,
    StoredResponse,
    WaitOutcome,
    WaitResult,
)
from tests.sidecar.store.conftest import BACKENDS, FALLS_BACK_BACKENDS
from tests.support.clock import FakeClock

#: Falls back to local state under the resilient store: it runs "degraded" too.
STORE_BACKENDS = FALLS_BACK_BACKENDS

KEY, PRINT, OTHER_PRINT = "k:order-42", "fp-a", "fp-b"
TTL = 30.0


def response(fake: FakeClock, body: bytes = b'{"ok":true}', ttl: float = 300.0) -> StoredResponse:
    return StoredResponse(
        201, (("content-type", "application/json"), ("x-id", "7")), body, fake.t, fake.t + ttl
    )


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


# Not "degraded": a token it never saw may be a lock held in the lost Redis,
# which it renews blindly so the call in flight goes on (test_resilient.py).
@pytest.mark.parametrize("store", BACKENDS, indirect=True)
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
