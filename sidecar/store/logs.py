"""The logs capability (SPEC §8): events, request records, hourly stats.

Three bounded logs. Values are opaque bytes (the caller's encoding; never
decoded here). The writes (`LogWriter`) are called by background flushers
with batches, not by requests: embedded commits each call as its own
transaction (not fsynced: a power cut may lose the last second), Redis runs
one script or pipeline per call; they raise StoreUnavailable when the store
cannot take them (the resilient store never does: while Redis is lost it
keeps them locally, best effort). The reads (`LogReader`) are for commands
and go to the shared state (the SQLite file, Redis), so a command in another
process sees every sidecar's writes; they raise StoreUnavailable rather than
show a part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

#: Events kept in the log (`events_add`); the oldest are dropped past it.
EVENTS_MAX = 10_000
#: Request records kept for replay (`requests_put`); the oldest are dropped past it.
REQUESTS_MAX = 1_000
#: Hour buckets of stats older than this (before the store's current hour)
#: may be dropped, and are never read.
STATS_KEEP_HOURS = 24 * 90


def check_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """The non-zero counters of `counts`; ValueError for a negative or non-integer one."""
    kept: dict[str, int] = {}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            # The counter's name is ours (a kind of rescue, a currency): safe to show.
            raise ValueError(f"stats counter {name!r} must be a whole number >= 0")
        if value:
            kept[name] = value
    return kept


def stats_window(since_hour: int, now: float) -> tuple[int, int]:
    """The hour buckets a `stats_read(since_hour)` sums, first and last inclusive.

    From `since_hour`, but no earlier than STATS_KEEP_HOURS before the
    current hour, up to the next hour (a sidecar whose clock is a little
    ahead may already count in it).
    """
    current = int(now // 3600)
    return max(since_hour, current - STATS_KEEP_HOURS), current + 1


def parse_seq_cursor(after: str) -> int:
    """An event cursor of the memory and embedded stores (a row number) as an int."""
    if not after.isascii() or not after.isdigit():
        raise ValueError("not an event cursor of this store")
    return int(after)


class LogWriter(Protocol):
    """What the background flushers write; falls back to local state when Redis is lost."""

    async def events_add(self, items: Sequence[bytes]) -> None:
        """Append events in order; the log keeps the newest EVENTS_MAX."""

    async def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store request records by request id, in order; a record replaces the one
        with the same id (and becomes the newest). The newest REQUESTS_MAX are kept."""

    async def stats_add(self, hour: int, counts: Mapping[str, int]) -> None:
        """Add `counts` to the counters of the hour bucket `hour` (unix seconds // 3600).

        Counter names are opaque strings ("requests", "rescued:retry",
        "capital:usd"); values are whole numbers >= 0 (ValueError otherwise);
        a zero adds nothing, and a counter never added is absent from reads.
        Buckets older than STATS_KEEP_HOURS before the store's current hour
        may be dropped.
        """


class LogReader(Protocol):
    """What commands read; shared only: StoreUnavailable while Redis is lost."""

    async def events_read(self, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        """Events as (cursor, data), oldest first, at most `limit` (none when `limit` <= 0).

        after=None: the newest `limit` events. Else the events written after
        the one whose cursor is `after`, the oldest of them first (to follow
        the log, pass back the last cursor read). A cursor is an opaque str,
        strictly increasing in write order, shared by every sidecar on one
        Redis (embedded and memory: the row number as text; Redis: the
        stream entry id); compare cursors only by passing them back. A
        cursor whose event was trimmed still works: the read starts at the
        oldest event kept. ValueError when `after` is not this backend's
        kind of cursor.
        """

    async def request_get(self, request_id: str) -> bytes | None:
        """The request record of `request_id`, or None (never stored, or trimmed)."""

    async def stats_read(self, since_hour: int) -> dict[str, int]:
        """Every counter summed over the hour buckets from `since_hour` on (inclusive).

        Only the buckets of `stats_window(since_hour, now)` are read: none
        older than STATS_KEEP_HOURS, none past the store's next hour.
        """


class LogStore(LogWriter, LogReader, Protocol):
    """The three logs, written and read."""
