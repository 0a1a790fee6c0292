"""The embedded store's LLM budgets: straight to the file, each operation one
transaction (BEGIN IMMEDIATE: the write lock first, so a check and its
update are one step even against another process on the same file).

Tables (a step of `sqlite.MIGRATIONS`):

    llm_budgets   scope, limit_nano
    llm_spend     day, scope, spent_nano, reserved_nano, requests,
                  input_tokens, output_tokens
    llm_held      id, day, amount_nano, expires_at, scopes (JSON list):
                  reservations not yet settled or released
    llm_finished  id, at: settled or released ids, remembered FINISHED_KEEP

Budgets are fsynced (a user was told they are set); reservations and spend
are not (the request path; a power cut may lose the last few, which only
under-counts a day that is over anyway).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import orjson

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
from sidecar.store.embedded.sqlite import SQLite
from sidecar.store.embedded.state import EmbeddedState
from sidecar.store.memory.budgets import MemoryBudgets

_SET_BUDGET = "INSERT OR REPLACE INTO llm_budgets (scope, limit_nano) VALUES (?, ?)"
_DELETE_BUDGET = "DELETE FROM llm_budgets WHERE scope = ?"
_SELECT_BUDGETS = "SELECT scope, limit_nano FROM llm_budgets ORDER BY scope"
_SELECT_STANDING = """
SELECT b.limit_nano, COALESCE(s.spent_nano, 0), COALESCE(s.reserved_nano, 0)
FROM llm_budgets b LEFT JOIN llm_spend s ON s.day = ? AND s.scope = b.scope
WHERE b.scope = ?"""
#: Adds to one scope's tally of one day (the reserved delta may be negative).
_ADD = """
INSERT INTO llm_spend
    (day, scope, spent_nano, reserved_nano, requests, input_tokens, output_tokens)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, scope) DO UPDATE SET
    spent_nano = spent_nano + excluded.spent_nano,
    reserved_nano = reserved_nano + excluded.reserved_nano,
    requests = requests + excluded.requests,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens"""
_SELECT_EXPIRED = "SELECT id, amount_nano, scopes FROM llm_held WHERE day = ? AND expires_at <= ?"
_SELECT_HELD_DAYS = "SELECT DISTINCT day FROM llm_held"
_SELECT_HELD = "SELECT day, amount_nano, scopes FROM llm_held WHERE id = ?"
_PUT_HELD = "INSERT INTO llm_held (id, day, amount_nano, expires_at, scopes) VALUES (?, ?, ?, ?, ?)"
_DELETE_HELD = "DELETE FROM llm_held WHERE id = ?"
_IS_FINISHED = "SELECT 1 FROM llm_finished WHERE id = ?"
_PUT_FINISHED = "INSERT OR REPLACE INTO llm_finished (id, at) VALUES (?, ?)"
_PRUNE_FINISHED = "DELETE FROM llm_finished WHERE at <= ?"
_PRUNE_DAYS = "DELETE FROM llm_spend WHERE day < ?"
_SELECT_SPEND = """
SELECT s.scope, s.day, s.spent_nano, s.reserved_nano, b.limit_nano,
       s.requests, s.input_tokens, s.output_tokens
FROM llm_spend s LEFT JOIN llm_budgets b ON b.scope = s.scope
WHERE (?1 IS NULL OR s.scope = ?1) AND (?2 IS NULL OR s.day = ?2)
ORDER BY s.day, s.scope"""


class BudgetRows(SQLite):
    """The statements of the llm_* tables."""

    def llm_set_budget(self, scope: str, limit_nano: int) -> None:
        with self._write_transaction(fsync=True) as conn:
            conn.execute(_SET_BUDGET, (scope, limit_nano))

    def llm_remove_budget(self, scope: str) -> bool:
        with self._write_transaction(fsync=True) as conn:
            return conn.execute(_DELETE_BUDGET, (scope,)).rowcount > 0

    def llm_list_budgets(self) -> list[Budget]:
        rows = self._connection().execute(_SELECT_BUDGETS)
        return [Budget(str(scope), int(limit)) for scope, limit in rows]

    def llm_reserve(
        self,
        scopes: Sequence[str],
        amount_nano: int,
        day: str,
        reservation_id: str,
        expires_at: float,
        now: float,
    ) -> Refusal | None:
        with self._write_transaction(fsync=False) as conn:
            # The day before too: a reservation made just before midnight.
            _forget_expired(conn, previous_day(day), now)
            _forget_expired(conn, day, now)
            conn.execute(_PRUNE_DAYS, (oldest_kept_day(now),))
            conn.execute(_PRUNE_FINISHED, (now - FINISHED_KEEP,))
            for scope in scopes:
                row = conn.execute(_SELECT_STANDING, (day, scope)).fetchone()
                if row is None:
                    continue
                limit, spent, reserved = (int(value) for value in row)
                if spent + reserved + amount_nano > limit:
                    return Refusal(scope, limit, spent, reserved)
            taken = (
                conn.execute(_SELECT_HELD, (reservation_id,)).fetchone()
                or conn.execute(_IS_FINISHED, (reservation_id,)).fetchone()
            )
            if taken is not None:
                raise ValueError("a reservation id is used once")
            unique = list(dict.fromkeys(scopes))
            for scope in unique:
                conn.execute(_ADD, (day, scope, 0, amount_nano, 0, 0, 0))
            conn.execute(
                _PUT_HELD, (reservation_id, day, amount_nano, expires_at, orjson.dumps(unique))
            )
        return None

    def llm_settle(
        self,
        reservation_id: str,
        scopes: Sequence[str],
        day: str,
        cost_nano: int,
        input_tokens: int,
        output_tokens: int,
        now: float,
    ) -> None:
        with self._write_transaction(fsync=False) as conn:
            if conn.execute(_IS_FINISHED, (reservation_id,)).fetchone() is not None:
                return
            held = conn.execute(_SELECT_HELD, (reservation_id,)).fetchone()
            freed = 0
            unique = list(dict.fromkeys(scopes))
            if held is not None:
                day, freed, unique = str(held[0]), int(held[1]), _scopes(held[2])
                conn.execute(_DELETE_HELD, (reservation_id,))
            for scope in unique:
                conn.execute(_ADD, (day, scope, cost_nano, -freed, 1, input_tokens, output_tokens))
            conn.execute(_PUT_FINISHED, (reservation_id, now))

    def llm_release(self, reservation_id: str, now: float) -> None:
        with self._write_transaction(fsync=False) as conn:
            if conn.execute(_IS_FINISHED, (reservation_id,)).fetchone() is not None:
                return
            held = conn.execute(_SELECT_HELD, (reservation_id,)).fetchone()
            if held is not None:
                _free(conn, str(held[0]), int(held[1]), held[2])
                conn.execute(_DELETE_HELD, (reservation_id,))
            conn.execute(_PUT_FINISHED, (reservation_id, now))

    def llm_spend(self, scope: str | None, day: str | None, now: float) -> list[SpendRow]:
        with self._write_transaction(fsync=False) as conn:
            days = [day] if day is not None else [d for (d,) in conn.execute(_SELECT_HELD_DAYS)]
            for held_day in days:
                _forget_expired(conn, held_day, now)
            conn.execute(_PRUNE_DAYS, (oldest_kept_day(now),))
            rows = conn.execute(_SELECT_SPEND, (scope, day)).fetchall()
        return [_spend_row(*row) for row in rows]


def _spend_row(
    scope: str,
    day: str,
    spent: int,
    reserved: int,
    limit: int | None,
    requests: int,
    input_tokens: int,
    output_tokens: int,
) -> SpendRow:
    return SpendRow(
        str(scope),
        str(day),
        int(spent),
        int(reserved),
        None if limit is None else int(limit),
        int(requests),
        int(input_tokens),
        int(output_tokens),
    )


def _scopes(data: str | bytes) -> list[str]:
    scopes = orjson.loads(data)
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ValueError("a reservation's scopes are not a list of names")
    return scopes


def _free(conn: sqlite3.Connection, day: str, amount: int, scopes: str | bytes) -> None:
    for scope in _scopes(scopes):
        conn.execute(_ADD, (day, scope, 0, -amount, 0, 0, 0))


def _forget_expired(conn: sqlite3.Connection, day: str, now: float) -> None:
    """Free the reservations of `day` whose holder never settled them in time."""
    for reservation_id, amount, scopes in conn.execute(_SELECT_EXPIRED, (day, now)).fetchall():
        _free(conn, day, int(amount), scopes)
        conn.execute(_DELETE_HELD, (reservation_id,))


class EmbeddedBudgets(MemoryBudgets, EmbeddedState):
    async def set_budget(self, scope: str, limit_nano: int) -> None:
        if self._database is None:
            return await super().set_budget(scope, limit_nano)
        check_limit(limit_nano)
        await self._on_file("budget write", self._database.llm_set_budget, scope, limit_nano)

    async def remove_budget(self, scope: str) -> bool:
        if self._database is None:
            return await super().remove_budget(scope)
        return await self._on_file("budget write", self._database.llm_remove_budget, scope)

    async def list_budgets(self) -> list[Budget]:
        if self._database is None:
            return await super().list_budgets()
        return await self._on_file("budget read", self._database.llm_list_budgets)

    async def reserve(
        self,
        scopes: Sequence[str],
        amount_nano: int,
        day: str,
        reservation_id: str,
        expires_at: float,
    ) -> Refusal | None:
        if self._database is None:
            return await super().reserve(scopes, amount_nano, day, reservation_id, expires_at)
        check_amount(amount_nano)
        check_day(day)
        return await self._on_file(
            "budget reservation",
            self._database.llm_reserve,
            tuple(scopes),
            amount_nano,
            day,
            reservation_id,
            expires_at,
            self._clock.now(),
        )

    async def settle(
        self,
        reservation_id: str,
        scopes: Sequence[str],
        day: str,
        cost_nano: int,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        if self._database is None:
            return await super().settle(
                reservation_id, scopes, day, cost_nano, input_tokens, output_tokens
            )
        check_settlement(cost_nano, input_tokens, output_tokens)
        check_day(day)
        await self._on_file(
            "budget settlement",
            self._database.llm_settle,
            reservation_id,
            tuple(scopes),
            day,
            cost_nano,
            input_tokens,
            output_tokens,
            self._clock.now(),
        )

    async def release(self, reservation_id: str) -> None:
        if self._database is None:
            return await super().release(reservation_id)
        await self._on_file(
            "budget release", self._database.llm_release, reservation_id, self._clock.now()
        )

    async def spend(self, scope: str | None = None, day: str | None = None) -> list[SpendRow]:
        if self._database is None:
            return await super().spend(scope, day)
        return await self._on_file(
            "spend read", self._database.llm_spend, scope, day, self._clock.now()
        )
