"""LLM budgets, the same on every backend (conftest `store`, on a FakeClock).

A reservation holds its amount on every scope of a call, all or nothing:
a budgeted scope that cannot take it refuses the whole call and nothing
changes. Settling moves it to spent (whatever the real cost), counting a
request and its tokens; releasing frees it; either happens once per id. A
reservation left by a crashed sidecar stops holding budget at its expiry.
Concurrent reservations, in one store or two (two sidecars on one file or
server), never admit more than the budget allows. While Redis is lost,
budgets are not answered from local state (StoreUnavailable, a 503).
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from sidecar.errors import StoreUnavailable
from sidecar.llm.budgets import SPEND_KEEP_DAYS, utc_day
from sidecar.store.base import Store
from sidecar.store.budgets import Budget, Refusal, SpendRow
from tests.sidecar.store.conftest import SHARED_BACKENDS
from tests.support.clock import FakeClock

DAY = 86_400.0
#: A call's worst case, and budgets counted in such calls.
CALL = 50_000_000  # 0.05 USD
LEASE = 600.0
ROUTE = "route:chat"
KEY = "key:0123456789ab"
SCOPES = ("all", ROUTE, KEY)

_ids = itertools.count()


def new_id() -> str:
    return f"r{next(_ids)}"


async def reserve(
    store: Store,
    fake: FakeClock,
    amount: int = CALL,
    scopes: tuple[str, ...] = SCOPES,
    rid: str | None = None,
) -> tuple[str, Refusal | None]:
    rid = rid or new_id()
    refused = await store.reserve(scopes, amount, utc_day(fake.t), rid, fake.t + LEASE)
    return rid, refused


async def rows(store: Store, fake: FakeClock) -> dict[str, SpendRow]:
    """Today's spend rows by scope."""
    return {row.scope: row for row in await store.spend(day=utc_day(fake.t))}


# -- budgets ----------------------------------------------------------------------


async def test_a_new_store_has_no_budget_and_no_spend(store: Store) -> None:
    assert await store.list_budgets() == []
    assert await store.spend() == []


async def test_budgets_are_set_replaced_listed_and_removed(store: Store) -> None:
    await store.set_budget(ROUTE, 5 * CALL)
    await store.set_budget("all", 100 * CALL)
    await store.set_budget(ROUTE, 3 * CALL)

    assert await store.list_budgets() == [Budget("all", 100 * CALL), Budget(ROUTE, 3 * CALL)]
    assert await store.remove_budget(ROUTE) is True
    assert await store.remove_budget(ROUTE) is False
    assert await store.list_budgets() == [Budget("all", 100 * CALL)]


async def test_a_budget_must_be_above_zero(store: Store) -> None:
    with pytest.raises(ValueError, match="above zero"):
        await store.set_budget(ROUTE, 0)
    assert await store.list_budgets() == []


# -- reserve, settle, release -------------------------------------------------------


async def test_a_reservation_holds_its_amount_on_every_scope(store: Store, fake: FakeClock) -> None:
    await store.set_budget(ROUTE, 5 * CALL)

    _, refused = await reserve(store, fake)

    assert refused is None
    today = await rows(store, fake)
    assert set(today) == set(SCOPES)
    assert today[ROUTE] == SpendRow(ROUTE, utc_day(fake.t), 0, CALL, 5 * CALL, 0, 0, 0)
    # Spend is kept on the unbudgeted scopes too, for `llm spend` and stats.
    assert today["all"].reserved_nano == CALL and today["all"].limit_nano is None
    assert today[KEY].reserved_nano == CALL


async def test_a_refusal_names_the_scope_and_changes_nothing(store: Store, fake: FakeClock) -> None:
    await store.set_budget(KEY, 2 * CALL)
    await store.set_budget("all", 10 * CALL)
    await reserve(store, fake)
    settled, _ = await reserve(store, fake, amount=CALL // 2)
    await store.settle(settled, SCOPES, utc_day(fake.t), CALL // 4, 100, 20)
    before = await store.spend()

    _, refused = await reserve(store, fake)

    assert refused == Refusal(KEY, 2 * CALL, CALL // 4, CALL)
    assert await store.spend() == before


async def test_a_reservation_that_fits_exactly_is_admitted(store: Store, fake: FakeClock) -> None:
    await store.set_budget(ROUTE, 2 * CALL)
    assert (await reserve(store, fake))[1] is None
    assert (await reserve(store, fake))[1] is None
    _, refused = await reserve(store, fake, amount=1)
    assert refused == Refusal(ROUTE, 2 * CALL, 0, 2 * CALL)


async def test_settle_moves_the_reservation_to_the_real_cost(store: Store, fake: FakeClock) -> None:
    await store.set_budget(ROUTE, 3 * CALL)
    day = utc_day(fake.t)
    cheap, _ = await reserve(store, fake)
    dear, _ = await reserve(store, fake)

    await store.settle(cheap, SCOPES, day, CALL // 10, 1200, 350)
    # More than reserved (an input estimate that undershot): spent as billed.
    await store.settle(dear, SCOPES, day, CALL + 7, 3000, 900)

    today = await rows(store, fake)
    assert today[ROUTE] == SpendRow(ROUTE, day, CALL // 10 + CALL + 7, 0, 3 * CALL, 2, 4200, 1250)
    assert today["all"].spent_nano == today[KEY].spent_nano == CALL // 10 + CALL + 7
    _, refused = await reserve(store, fake, amount=2 * CALL)
    assert refused == Refusal(ROUTE, 3 * CALL, CALL // 10 + CALL + 7, 0)


async def test_settle_and_release_happen_once_per_id(store: Store, fake: FakeClock) -> None:
    day = utc_day(fake.t)
    settled, _ = await reserve(store, fake)
    released, _ = await reserve(store, fake)

    await store.settle(settled, SCOPES, day, 10, 1, 1)
    await store.settle(settled, SCOPES, day, 10, 1, 1)
    await store.release(settled)
    await store.release(released)
    await store.release(released)
    await store.settle(released, SCOPES, day, 10, 1, 1)

    row = (await rows(store, fake))["all"]
    assert (row.spent_nano, row.reserved_nano, row.requests) == (10, 0, 1)
    assert (row.input_tokens, row.output_tokens) == (1, 1)


async def test_release_frees_the_budget_without_counting_a_request(
    store: Store, fake: FakeClock
) -> None:
    await store.set_budget(ROUTE, CALL)
    rid, _ = await reserve(store, fake)
    assert (await reserve(store, fake))[1] is not None

    await store.release(rid)

    row = (await rows(store, fake))[ROUTE]
    assert (row.spent_nano, row.reserved_nano, row.requests) == (0, 0, 0)
    assert (await reserve(store, fake))[1] is None


async def test_a_reservation_id_is_used_once(store: Store, fake: FakeClock) -> None:
    rid, _ = await reserve(store, fake)
    with pytest.raises(ValueError, match="once"):
        await reserve(store, fake, rid=rid)
    await store.release(rid)
    with pytest.raises(ValueError, match="once"):
        await reserve(store, fake, rid=rid)
    assert (await rows(store, fake))["all"].reserved_nano == 0


async def test_settling_an_unknown_id_still_records_the_spend(
    store: Store, fake: FakeClock
) -> None:
    day = utc_day(fake.t)

    await store.settle("never-reserved", ("all", ROUTE), day, 42, 5, 6)

    today = await rows(store, fake)
    assert today[ROUTE] == SpendRow(ROUTE, day, 42, 0, None, 1, 5, 6)
    assert set(today) == {"all", ROUTE}


# -- expiry, days -----------------------------------------------------------------


async def test_an_expired_reservation_stops_holding_budget(store: Store, fake: FakeClock) -> None:
    await store.set_budget(ROUTE, CALL)
    day = utc_day(fake.t)
    crashed, _ = await reserve(store, fake)
    fake.advance(LEASE - 1)
    assert (await reserve(store, fake))[1] == Refusal(ROUTE, CALL, 0, CALL)

    fake.advance(1)

    assert (await rows(store, fake))[ROUTE].reserved_nano == 0
    late, refused = await reserve(store, fake)
    assert refused is None
    # The crashed call's settle comes after all: its cost is counted, once,
    # and the reservation it no longer holds is not freed twice.
    await store.settle(crashed, SCOPES, day, 30, 10, 10)
    await store.settle(crashed, SCOPES, day, 30, 10, 10)
    row = (await rows(store, fake))[ROUTE]
    assert (row.spent_nano, row.reserved_nano, row.requests) == (30, CALL, 1)
    await store.release(late)
    assert (await rows(store, fake))[ROUTE].reserved_nano == 0


async def test_a_budget_is_per_utc_day(store: Store, fake: FakeClock) -> None:
    await store.set_budget(ROUTE, CALL)
    yesterday = utc_day(fake.t)
    rid, _ = await reserve(store, fake)
    await store.settle(rid, SCOPES, yesterday, CALL, 1, 1)
    assert (await reserve(store, fake, amount=1))[1] is not None

    fake.advance(DAY)

    assert (await reserve(store, fake))[1] is None
    spent = {(row.day, row.scope): row.spent_nano for row in await store.spend(scope=ROUTE)}
    assert spent == {(yesterday, ROUTE): CALL, (utc_day(fake.t), ROUTE): 0}


async def test_a_reservation_made_before_midnight_expires_the_next_day(
    store: Store, fake: FakeClock
) -> None:
    fake.t = DAY * 10 - 10  # ten seconds to midnight
    yesterday = utc_day(fake.t)
    await reserve(store, fake)

    fake.advance(LEASE)
    await reserve(store, fake)  # a reservation of the new day

    assert (await store.spend(day=yesterday))[0].reserved_nano == 0


async def test_a_settle_after_midnight_lands_on_the_reservation_day(
    store: Store, fake: FakeClock
) -> None:
    fake.t = DAY * 10 - 10
    yesterday = utc_day(fake.t)
    rid, _ = await reserve(store, fake)
    fake.advance(60)

    await store.settle(rid, SCOPES, utc_day(fake.t), 99, 1, 2)

    assert [(r.day, r.spent_nano, r.reserved_nano) for r in await store.spend(scope="all")] == [
        (yesterday, 99, 0)
    ]


async def test_spend_is_filtered_by_scope_and_day(store: Store, fake: FakeClock) -> None:
    first = utc_day(fake.t)
    rid, _ = await reserve(store, fake, scopes=("all", ROUTE))
    await store.settle(rid, (), first, 5, 1, 1)
    fake.advance(DAY)
    second = utc_day(fake.t)
    rid, _ = await reserve(store, fake, scopes=("all", "route:other"))
    await store.settle(rid, (), second, 7, 1, 1)

    every = [(row.day, row.scope, row.spent_nano) for row in await store.spend()]
    assert every == [
        (first, "all", 5),
        (first, ROUTE, 5),
        (second, "all", 7),
        (second, "route:other", 7),
    ]
    by_all = [(r.day, r.spent_nano) for r in await store.spend(scope="all")]
    assert by_all == [(first, 5), (second, 7)]
    assert [r.scope for r in await store.spend(day=second)] == ["all", "route:other"]
    assert await store.spend(scope=ROUTE, day=second) == []


async def test_spend_is_kept_for_at_least_31_days(store: Store, fake: FakeClock) -> None:
    first = utc_day(fake.t)
    rid, _ = await reserve(store, fake)
    await store.settle(rid, SCOPES, first, 5, 1, 1)

    fake.advance(31 * DAY)
    await reserve(store, fake)
    assert [r.day for r in await store.spend(scope="all")] == [first, utc_day(fake.t)]

    fake.advance((SPEND_KEEP_DAYS - 30) * DAY)
    await reserve(store, fake)
    assert first not in {r.day for r in await store.spend()}


# -- concurrency --------------------------------------------------------------------


async def test_concurrent_reservations_never_exceed_the_budget(
    store: Store, fake: FakeClock
) -> None:
    await store.set_budget(ROUTE, 5 * CALL)

    results = await asyncio.gather(*(reserve(store, fake) for _ in range(20)))

    assert sum(refused is None for _, refused in results) == 5
    assert (await rows(store, fake))[ROUTE].reserved_nano == 5 * CALL


@pytest.mark.parametrize("store", SHARED_BACKENDS, indirect=True)
async def test_two_sidecars_reserving_at_once_share_one_budget(
    store: Store, other: Store, fake: FakeClock
) -> None:
    await store.set_budget(ROUTE, 5 * CALL)
    await store.set_budget("all", 7 * CALL)

    results = await asyncio.gather(
        *(reserve(backend, fake) for _ in range(10) for backend in (store, other))
    )

    admitted = [rid for rid, refused in results if refused is None]
    assert len(admitted) == 5
    for rid in admitted:
        await other.settle(rid, SCOPES, utc_day(fake.t), CALL, 10, 10)
    today = await rows(store, fake)
    assert today[ROUTE].spent_nano == 5 * CALL and today[ROUTE].reserved_nano == 0
    assert today[ROUTE].requests == 5


# -- Redis lost ---------------------------------------------------------------------


@pytest.mark.parametrize("store", ["degraded"], indirect=True)
async def test_while_redis_is_lost_budgets_are_unavailable(store: Store, fake: FakeClock) -> None:
    with pytest.raises(StoreUnavailable):
        await reserve(store, fake)
    with pytest.raises(StoreUnavailable):
        await store.list_budgets()
    with pytest.raises(StoreUnavailable):
        await store.settle("r", SCOPES, utc_day(fake.t), 1, 1, 1)
    with pytest.raises(StoreUnavailable):
        await store.spend()
