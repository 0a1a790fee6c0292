"""The embedded store's hot state on disk: the cache, explicit keys' replay
records and breakers, written behind.

The memory mixins report each change worth keeping (a cache entry stored or
dropped, an explicit key's replay record, a breaker saved or forgotten) to
`PendingWrites`, their observer. Only the latest change to each row is kept,
in change order; the writer takes them all as one `Batch`, one transaction
(`HotRows.write`), and puts a batch that failed back under the changes made
since. At open, `HotRows.load` reads back what has not expired.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from typing import TypeVar

from sidecar.store.breaker import BreakerState, BreakerStatus
from sidecar.store.cache import StoredResponse
from sidecar.store.embedded.sqlite import SQLite, decoded
from sidecar.store.memory import IdempotencyRecord

T = TypeVar("T")

#: A breaker nobody failed against for this long is forgotten (closed), as in Redis.
BREAKER_IDLE_TTL = 24 * 3600.0


@dataclass(slots=True)
class Batch:
    """Changes for one transaction; None deletes the row."""

    cache: dict[str, StoredResponse | None] = field(default_factory=dict)
    records: dict[str, IdempotencyRecord] = field(default_factory=dict)
    breakers: dict[str, BreakerStatus | None] = field(default_factory=dict)
    #: When set: delete what expired by then.
    sweep_before: float | None = None

    def __len__(self) -> int:
        return len(self.cache) + len(self.records) + len(self.breakers)


class PendingWrites:
    """The write-behind queue: the latest change to each row, in change order."""

    def __init__(self) -> None:
        self._batch = Batch()
        self.ready = asyncio.Event()

    def cache_stored(self, key: str, entry: StoredResponse) -> None:
        _set_last(self._batch.cache, key, entry)
        self.ready.set()

    def cache_dropped(self, key: str) -> None:
        _set_last(self._batch.cache, key, None)
        self.ready.set()

    def record_kept(self, key: str, record: IdempotencyRecord) -> None:
        self._batch.records[key] = record
        self.ready.set()

    def breaker_saved(self, host: str, status: BreakerStatus | None) -> None:
        self._batch.breakers[host] = status
        self.ready.set()

    def take(self) -> Batch:
        batch, self._batch = self._batch, Batch()
        self.ready.clear()
        return batch

    def put_back(self, batch: Batch) -> None:
        """Queue a batch that failed again, under the changes made since."""
        for name in ("cache", "records", "breakers"):
            newer = getattr(self._batch, name)
            setattr(self._batch, name, getattr(batch, name) | newer)
        if len(self._batch):
            self.ready.set()


def _set_last(changes: dict[str, T], key: str, value: T) -> None:
    # Re-inserted at the end: rows are written, and loaded back, in change order.
    changes.pop(key, None)
    changes[key] = value


@dataclass(slots=True)
class Loaded:
    cache: list[tuple[str, StoredResponse]]
    records: list[tuple[str, IdempotencyRecord]]
    breakers: list[tuple[str, BreakerStatus]]


class HotRows(SQLite):
    """The statements of the write-behind tables: cache, idempotency, breaker."""

    def load(self, now: float) -> Loaded:
        conn = self._connection()
        cache = decoded(
            conn.execute(
                "SELECT key, entry FROM cache WHERE expires_at > ? ORDER BY rowid", (now,)
            ),
            lambda key, entry: (key, StoredResponse.decode(entry)),
        )
        records = decoded(
            conn.execute(
                "SELECT key, fingerprint, keep_until, response FROM idempotency"
                " WHERE keep_until > ?",
                (now,),
            ),
            lambda key, fingerprint, keep_until, response: (
                key,
                IdempotencyRecord(fingerprint, StoredResponse.decode(response), keep_until),
            ),
        )
        breakers = decoded(
            conn.execute(
                "SELECT host, state, failures, opened_at FROM breaker WHERE saved_at > ?",
                (now - BREAKER_IDLE_TTL,),
            ),
            lambda host, state, failures, opened_at: (
                host,
                BreakerStatus(BreakerState(state), int(failures), float(opened_at)),
            ),
        )
        return Loaded(cache, records, breakers)

    def write(self, batch: Batch, now: float) -> None:
        """One transaction: the batch, then the sweep if due."""
        with self._transaction() as conn:
            _write_cache(conn, batch.cache)
            conn.executemany(
                "INSERT OR REPLACE INTO idempotency (key, fingerprint, keep_until, response)"
                " VALUES (?, ?, ?, ?)",
                [
                    (key, r.fingerprint, r.keep_until, r.response.encode())
                    for key, r in batch.records.items()
                ],
            )
            _write_breakers(conn, batch.breakers, now)
            if batch.sweep_before is not None:
                _sweep(conn, batch.sweep_before)


def _write_cache(conn: sqlite3.Connection, changes: dict[str, StoredResponse | None]) -> None:
    for key, entry in changes.items():
        if entry is None:
            conn.execute("DELETE FROM cache WHERE key = ?", (key,))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO cache (key, expires_at, entry) VALUES (?, ?, ?)",
                (key, entry.expires_at, entry.encode()),
            )


def _write_breakers(
    conn: sqlite3.Connection, changes: dict[str, BreakerStatus | None], now: float
) -> None:
    for host, status in changes.items():
        if status is None:
            conn.execute("DELETE FROM breaker WHERE host = ?", (host,))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO breaker"
                " (host, state, failures, opened_at, saved_at) VALUES (?, ?, ?, ?, ?)",
                (host, status.state.value, status.failures, status.opened_at, now),
            )


def _sweep(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("DELETE FROM cache WHERE expires_at <= ?", (now,))
    conn.execute("DELETE FROM idempotency WHERE keep_until <= ?", (now,))
    conn.execute("DELETE FROM breaker WHERE saved_at <= ?", (now - BREAKER_IDLE_TTL,))
