"""The LLM budget capability: USD-per-day budgets, reservations and spend (SPEC §10).

Money is integer nano-USD (1e-9 USD; `sidecar.llm.budgets` converts at the
edges), so every backend adds and compares exactly: SQLite's int64, Redis's
HINCRBY, Lua doubles below 2**53. A day is the UTC day "YYYY-MM-DD".

A call reserves its worst case against every scope it falls under
(`reserve`, all or nothing, atomically across the scopes), then settles to
its real cost (`settle`) or releases what it held (`release`). A reservation
a crashed sidecar never settled stops holding budget at its `expires_at`
(wall-clock seconds, judged by the store's clock). Spend is kept per scope
and day for every scope a call counts against, budgeted or not, for
`mirapi llm spend` and `mirapi stats`; at least 31 days are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

#: A settled or released reservation id is remembered this long (seconds), so
#: a second settle or release of it does nothing.
FINISHED_KEEP = 2 * 86_400.0


@dataclass(frozen=True, slots=True)
class Budget:
    """At most `limit_nano` nano-USD a UTC day on `scope`."""

    scope: str
    limit_nano: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation was refused: `scope`'s budget cannot take it today."""

    scope: str
    limit_nano: int
    spent_nano: int
    reserved_nano: int


@dataclass(frozen=True, slots=True)
class SpendRow:
    """One scope's spend on one day; `limit_nano` None when it has no budget."""

    scope: str
    day: str
    spent_nano: int
    reserved_nano: int
    limit_nano: int | None
    requests: int
    input_tokens: int
    output_tokens: int


def check_amount(amount: int, what: str = "an amount of nano-USD") -> None:
    """ValueError unless `amount` is an int >= 0 (bool is not)."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError(f"{what} must be a whole number >= 0")


def check_settlement(cost_nano: int, input_tokens: int, output_tokens: int) -> None:
    """ValueError unless the cost and both token counts are ints >= 0."""
    check_amount(cost_nano, "a cost in nano-USD")
    check_amount(input_tokens, "input tokens")
    check_amount(output_tokens, "output tokens")


def check_limit(limit_nano: int) -> None:
    """ValueError unless `limit_nano` is a positive int."""
    check_amount(limit_nano, "a budget in nano-USD")
    if limit_nano == 0:
        raise ValueError("a budget must be above zero")


class BudgetStore(Protocol):
    """Shared only: StoreUnavailable while Redis is lost (a budget checked against one
    sidecar's local state would not hold across sidecars)."""

    async def set_budget(self, scope: str, limit_nano: int) -> None:
        """`scope` may spend at most `limit_nano` a UTC day (replacing its budget)."""

    async def remove_budget(self, scope: str) -> bool:
        """Forget `scope`'s budget (its spend stays); False when it had none."""

    async def list_budgets(self) -> list[Budget]:
        """Every budget, by scope."""

    async def reserve(
        self,
        scopes: Sequence[str],
        amount_nano: int,
        day: str,
        reservation_id: str,
        expires_at: float,
    ) -> Refusal | None:
        """Hold `amount_nano` on every scope of `scopes` for `day`, or refuse.

        Atomic across the scopes: first the expired reservations of `day`
        (and of the day before) are forgotten (expires_at <= the store's now); then, when some
        budgeted scope has spent + reserved + amount > its limit, the first
        such scope (in `scopes` order) is returned as a Refusal and nothing
        changes; else every scope, budgeted or not, holds `amount_nano` more
        until `reservation_id` is settled, released or expires at
        `expires_at`. None when reserved.
        """

    async def settle(
        self,
        reservation_id: str,
        scopes: Sequence[str],
        day: str,
        cost_nano: int,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        """The call cost `cost_nano` (more or less than reserved): atomically free the
        reservation and add the cost, one request and the tokens to each scope.

        A reservation still held is settled on the scopes and day it was made
        for; one that expired (or never was) on `scopes` and `day`. Once per
        id: settling or releasing an id already settled or released does
        nothing.
        """

    async def release(self, reservation_id: str) -> None:
        """Free the reservation, nothing spent and no request counted; once per id."""

    async def spend(self, scope: str | None = None, day: str | None = None) -> list[SpendRow]:
        """The spend rows kept (of `scope`, of `day` when given), by day then scope.

        Reading a day first forgets its expired reservations, as `reserve` does."""
