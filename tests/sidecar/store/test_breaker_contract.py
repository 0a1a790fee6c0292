"""The circuit breaker capability, the same on every backend (conftest
`store`), the resilient store with Redis lost included. Time moves on the
FakeClock.
"""

from __future__ import annotations

import asyncio

import pytest

from sidecar.store.base import BreakerState, Store
from tests.sidecar.store.conftest import FALLS_BACK_BACKENDS
from tests.support.clock import FakeClock

#: Falls back to local state under the resilient store: it runs "degraded" too.
STORE_BACKENDS = FALLS_BACK_BACKENDS

HOST = "api.test"
THRESHOLD, COOLDOWN, LEASE = 3, 10.0, 5.0


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


async def test_admission_is_clean_only_with_no_failure_counted(store: Store) -> None:
    assert (await store.breaker_admit(HOST, COOLDOWN, LEASE)).clean
    await store.breaker_record(HOST, False, THRESHOLD)
    counted = await store.breaker_admit(HOST, COOLDOWN, LEASE)
    assert counted.allowed and not counted.clean
    await store.breaker_record(HOST, True, THRESHOLD)
    assert (await store.breaker_admit(HOST, COOLDOWN, LEASE)).clean
