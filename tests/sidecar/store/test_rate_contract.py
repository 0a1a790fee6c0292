"""The rate bucket capability, the same on every backend (conftest `store`),
the resilient store with Redis lost included: a token bucket's decision
(remaining, reset, retry_after) to the float, on the fake clock.
"""

from __future__ import annotations

import pytest

from sidecar.store.base import RateDecision, Store
from tests.sidecar.store.conftest import FALLS_BACK_BACKENDS
from tests.support.clock import FakeClock

#: Falls back to local state under the resilient store: it runs "degraded" too.
STORE_BACKENDS = FALLS_BACK_BACKENDS


# -- rate limits ----------------------------------------------------------------------


def decision(allowed: bool, remaining: int, reset: float, retry_after: float) -> RateDecision:
    return RateDecision(allowed, remaining, pytest.approx(reset), pytest.approx(retry_after))


async def test_a_bucket_allows_its_limit_then_refuses(store: Store) -> None:
    # 3 a minute: a token every 20 seconds.
    taken = [await store.rate_take("client-a", 3, 60.0) for _ in range(4)]

    assert taken == [
        decision(True, 2, 20.0, 0.0),
        decision(True, 1, 40.0, 0.0),
        decision(True, 0, 60.0, 0.0),
        decision(False, 0, 60.0, 20.0),
    ]


async def test_a_bucket_refills_with_the_clock(store: Store, fake: FakeClock) -> None:
    for _ in range(3):
        await store.rate_take("client-a", 3, 60.0)

    fake.advance(10)
    assert await store.rate_take("client-a", 3, 60.0) == decision(False, 0, 50.0, 10.0)
    fake.advance(10)  # one token
    assert await store.rate_take("client-a", 3, 60.0) == decision(True, 0, 60.0, 0.0)
    fake.advance(30)  # a token and a half
    assert await store.rate_take("client-a", 3, 60.0) == decision(True, 0, 50.0, 0.0)
    fake.advance(3600)  # full, never more than the limit
    assert await store.rate_take("client-a", 3, 60.0) == decision(True, 2, 20.0, 0.0)


async def test_a_token_due_is_not_lost_to_float_rounding(store: Store, fake: FakeClock) -> None:
    # 1 per 49 s: 49 s of refill is 49 x (1/49) = 0.9999999999999999 in floats.
    assert (await store.rate_take("client-a", 1, 49.0)).allowed
    fake.advance(49)
    assert await store.rate_take("client-a", 1, 49.0) == decision(True, 0, 49.0, 0.0)


async def test_buckets_are_independent(store: Store) -> None:
    assert (await store.rate_take("client-a", 1, 1.0)).allowed
    assert not (await store.rate_take("client-a", 1, 1.0)).allowed

    assert await store.rate_take("client-b", 1, 1.0) == decision(True, 0, 1.0, 0.0)
    assert await store.rate_take("route:payments|client-a", 5, 1.0) == decision(True, 4, 0.2, 0.0)


async def test_a_key_of_any_shape_has_its_bucket(store: Store) -> None:
    for key in ("", "{tagged}", "k" * 500, "clé ünïcode"):
        assert (await store.rate_take(key, 1, 60.0)).allowed, key
        assert not (await store.rate_take(key, 1, 60.0)).allowed, key


async def test_a_limit_that_allows_nothing_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await store.rate_take("client-a", 0, 60.0)
    with pytest.raises(ValueError, match="period"):
        await store.rate_take("client-a", 10, 0.0)
