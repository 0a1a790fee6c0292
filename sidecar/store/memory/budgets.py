"""The memory store's LLM budgets: dicts in this process (one event loop, so each
method, having no await, is atomic). The embedded store keeps them in its
file instead; this is the memory-only store's and the resilient store's
local side (never used there: budgets are shared only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sidecar.llm.budgets import check_day, oldest_kept_day, previous_day
from sidecar.store.budgets import (
    FINISHED_KEEP,
    Budget,
    Refusal,
    SpendRow,
    check_amount,
    check_limit,
    check_settlement,
)
from sidecar.store.memory.state import MemoryState

#: The old days and finished ids are dropped at most this often (clock seconds).
PRUNE_EVERY = 3600.0


@dataclass(slots=True)
class Tally:
    """One scope's spend on one day."""

    spent: int = 0
    reserved: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Held:
    """A reservation not yet settled or released."""

    day: str
    scopes: tuple[str, ...]
    amount: int
    expires_at: float


class MemoryBudgets(MemoryState):
    def __init__(self) -> None:
        super().__init__()
        self._budgets: dict[str, int] = {}
        #: (day, scope) -> its tally.
        self._tallies: dict[tuple[str, str], Tally] = {}
        self._held: dict[str, Held] = {}
        #: Reservation id -> when it was settled or released.
        self._finished: dict[str, float] = {}
        self._next_prune = 0.0

    async def set_budget(self, scope: str, limit_nano: int) -> None:
        check_limit(limit_nano)
        self._budgets[scope] = limit_nano

    async def remove_budget(self, scope: str) -> bool:
        return self._budgets.pop(scope, None) is not None

    async def list_budgets(self) -> list[Budget]:
        return [Budget(scope, limit) for scope, limit in sorted(self._budgets.items())]

    async def reserve(
        self,
        scopes: Sequence[str],
        amount_nano: int,
        day: str,
        reservation_id: str,
        expires_at: float,
    ) -> Refusal | None:
        check_amount(amount_nano)
        check_day(day)
        now = self._clock.now()
        # The day before too: a reservation made just before midnight.
        self._forget_expired(previous_day(day), now)
        self._forget_expired(day, now)
        self._prune(now)
        for scope in scopes:
            limit = self._budgets.get(scope)
            if limit is None:
                continue
            tally = self._tallies.get((day, scope), Tally())
            if tally.spent + tally.reserved + amount_nano > limit:
                return Refusal(scope, limit, tally.spent, tally.reserved)
        if reservation_id in self._held or reservation_id in self._finished:
            raise ValueError("a reservation id is used once")
        unique = tuple(dict.fromkeys(scopes))
        for scope in unique:
            self._tally(day, scope).reserved += amount_nano
        self._held[reservation_id] = Held(day, unique, amount_nano, expires_at)
        return None

    async def settle(
        self,
        reservation_id: str,
        scopes: Sequence[str],
        day: str,
        cost_nano: int,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        check_settlement(cost_nano, input_tokens, output_tokens)
        check_day(day)
        if reservation_id in self._finished:
            return
        held = self._held.pop(reservation_id, None)
        if held is not None:
            day, unique = held.day, held.scopes
        else:
            unique = tuple(dict.fromkeys(scopes))
        for scope in unique:
            tally = self._tally(day, scope)
            if held is not None:
                tally.reserved -= held.amount
            tally.spent += cost_nano
            tally.requests += 1
            tally.input_tokens += input_tokens
            tally.output_tokens += output_tokens
        self._finished[reservation_id] = self._clock.now()

    async def release(self, reservation_id: str) -> None:
        if reservation_id in self._finished:
            return
        held = self._held.pop(reservation_id, None)
        if held is not None:
            for scope in held.scopes:
                self._tally(held.day, scope).reserved -= held.amount
        self._finished[reservation_id] = self._clock.now()

    async def spend(self, scope: str | None = None, day: str | None = None) -> list[SpendRow]:
        now = self._clock.now()
        self._prune(now)
        for held_day in {h.day for h in self._held.values()} if day is None else {day}:
            self._forget_expired(held_day, now)
        return [
            SpendRow(
                row_scope,
                row_day,
                tally.spent,
                tally.reserved,
                self._budgets.get(row_scope),
                tally.requests,
                tally.input_tokens,
                tally.output_tokens,
            )
            for (row_day, row_scope), tally in sorted(self._tallies.items())
            if (scope is None or row_scope == scope) and (day is None or row_day == day)
        ]

    def _tally(self, day: str, scope: str) -> Tally:
        tally = self._tallies.get((day, scope))
        if tally is None:
            tally = self._tallies[(day, scope)] = Tally()
        return tally

    def _forget_expired(self, day: str, now: float) -> None:
        """Free the reservations of `day` whose holder never settled them in time."""
        expired = [
            (rid, held)
            for rid, held in self._held.items()
            if held.day == day and held.expires_at <= now
        ]
        for rid, held in expired:
            del self._held[rid]
            for scope in held.scopes:
                self._tally(day, scope).reserved -= held.amount

    def _prune(self, now: float) -> None:
        """Drop the days past keeping and the finished ids past remembering (hourly)."""
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY
        oldest = oldest_kept_day(now)
        for key in [key for key in self._tallies if key[0] < oldest]:
            del self._tallies[key]
        # Oldest first (insertion order): stop at the first one still remembered.
        for rid, at in list(self._finished.items()):
            if at > now - FINISHED_KEEP:
                break
            del self._finished[rid]
