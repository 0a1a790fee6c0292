"""The embedded store's logs (events, request records, stats): to the file,
for `mirapi events tail`, `replay` and `stats` in another process.

Their writes are not on the request path: a background flusher in the
sidecar batches them, and each call here is one transaction on the writer
thread, committed without an fsync (synchronous=NORMAL in WAL): a power cut
may lose the last second of them, never the file. Trimming to the bounds is
in the same transaction: events and requests keep their newest EVENTS_MAX /
REQUESTS_MAX rows, stats drops buckets older than STATS_KEEP_HOURS. Events
are only ever appended, so their ids are consecutive and the trim is one
index lookup (`id <= MAX(id) - N`); a replaced request record leaves a gap
in `seq`, so that trim finds the N-th newest row instead (REQUESTS_MAX steps
of the index). Reads go to the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sidecar.store.embedded.sqlite import SQLite
from sidecar.store.embedded.state import EmbeddedState
from sidecar.store.logs import (
    EVENTS_MAX,
    REQUESTS_MAX,
    STATS_KEEP_HOURS,
    check_counts,
    parse_seq_cursor,
    stats_window,
)
from sidecar.store.memory.logs import MemoryLogs


class LogRows(SQLite):
    """The statements of the `events`, `requests` and `stats` tables."""

    def events_add(self, items: Sequence[bytes]) -> None:
        with self._write_transaction(fsync=False) as conn:
            conn.executemany("INSERT INTO events (data) VALUES (?)", [(data,) for data in items])
            conn.execute(
                "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (EVENTS_MAX,)
            )

    def events_read(self, after: int | None, limit: int) -> list[tuple[str, bytes]]:
        conn = self._connection()
        if after is None:
            rows = conn.execute(
                "SELECT id, data FROM events ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
            rows.reverse()
        else:
            rows = conn.execute(
                "SELECT id, data FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
            ).fetchall()
        return [(str(number), bytes(data)) for number, data in rows]

    def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None:
        with self._write_transaction(fsync=False) as conn:
            # REPLACE deletes the row with the same id: the new one gets a new, higher seq.
            conn.executemany("INSERT OR REPLACE INTO requests (id, data) VALUES (?, ?)", items)
            conn.execute(
                "DELETE FROM requests WHERE seq <="
                " (SELECT seq FROM requests ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (REQUESTS_MAX,),
            )

    def request_get(self, request_id: str) -> bytes | None:
        row = (
            self._connection()
            .execute("SELECT data FROM requests WHERE id = ?", (request_id,))
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def stats_add(self, hour: int, counts: dict[str, int], current_hour: int) -> None:
        with self._write_transaction(fsync=False) as conn:
            conn.executemany(
                "INSERT INTO stats (hour, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (hour, name) DO UPDATE SET value = value + excluded.value",
                [(hour, name, value) for name, value in counts.items()],
            )
            conn.execute("DELETE FROM stats WHERE hour < ?", (current_hour - STATS_KEEP_HOURS,))

    def stats_read(self, first_hour: int, last_hour: int) -> dict[str, int]:
        rows = self._connection().execute(
            "SELECT name, SUM(value) FROM stats WHERE hour BETWEEN ? AND ? GROUP BY name",
            (first_hour, last_hour),
        )
        return {str(name): int(total) for name, total in rows}


class EmbeddedLogs(MemoryLogs, EmbeddedState):
    async def events_add(self, items: Sequence[bytes]) -> None:
        if self._database is None:
            return await super().events_add(items)
        if items:
            await self._on_file("events write", self._database.events_add, list(items))

    async def events_read(self, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        if self._database is None:
            return await super().events_read(after, limit)
        after_id = None if after is None else parse_seq_cursor(after)
        if limit <= 0:
            return []
        return await self._on_file("events read", self._database.events_read, after_id, limit)

    async def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None:
        if self._database is None:
            return await super().requests_put(items)
        if items:
            await self._on_file("requests write", self._database.requests_put, list(items))

    async def request_get(self, request_id: str) -> bytes | None:
        if self._database is None:
            return await super().request_get(request_id)
        return await self._on_file("requests read", self._database.request_get, request_id)

    async def stats_add(self, hour: int, counts: Mapping[str, int]) -> None:
        if self._database is None:
            return await super().stats_add(hour, counts)
        kept = check_counts(counts)
        if kept:
            current = int(self._clock.now() // 3600)
            await self._on_file("stats write", self._database.stats_add, hour, kept, current)

    async def stats_read(self, since_hour: int) -> dict[str, int]:
        if self._database is None:
            return await super().stats_read(since_hour)
        first, last = stats_window(since_hour, self._clock.now())
        return await self._on_file("stats read", self._database.stats_read, first, last)
