"""The memory store's logs: events in a deque bounded at EVENTS_MAX, numbered
from 1 (the number is the cursor, so the events after a cursor start at a
known index); request records in an insertion-ordered dict bounded at
REQUESTS_MAX (a replaced record moves to the newest end); stats as a dict of
hour buckets, the ones past STATS_KEEP_HOURS dropped when a new bucket is
opened."""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence

from sidecar.store.logs import (
    EVENTS_MAX,
    REQUESTS_MAX,
    STATS_KEEP_HOURS,
    check_counts,
    parse_seq_cursor,
    stats_window,
)
from sidecar.store.memory.state import MemoryState


class MemoryLogs(MemoryState):
    def __init__(self) -> None:
        super().__init__()
        # (number, data); numbers are consecutive, so a cursor maps to an index.
        self._events: deque[tuple[int, bytes]] = deque(maxlen=EVENTS_MAX)
        self._events_written = 0
        # request id -> record; the newest last.
        self._requests: OrderedDict[str, bytes] = OrderedDict()
        self._stats: dict[int, dict[str, int]] = {}

    async def events_add(self, items: Sequence[bytes]) -> None:
        for data in items:
            self._events_written += 1
            self._events.append((self._events_written, bytes(data)))

    async def events_read(self, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        if after is None:
            start = max(0, len(self._events) - limit)
        else:
            first = self._events[0][0] if self._events else self._events_written + 1
            start = max(0, parse_seq_cursor(after) - first + 1)
        if limit <= 0:
            return []
        chosen = itertools.islice(self._events, start, start + limit)
        return [(str(number), data) for number, data in chosen]

    async def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None:
        for request_id, data in items:
            self._requests.pop(request_id, None)
            self._requests[request_id] = bytes(data)
        while len(self._requests) > REQUESTS_MAX:
            self._requests.popitem(last=False)

    async def request_get(self, request_id: str) -> bytes | None:
        return self._requests.get(request_id)

    async def stats_add(self, hour: int, counts: Mapping[str, int]) -> None:
        kept = check_counts(counts)
        if not kept:
            return
        bucket = self._stats.get(hour)
        if bucket is None:
            bucket = self._stats[hour] = {}
            oldest = int(self._clock.now() // 3600) - STATS_KEEP_HOURS
            for old in [h for h in self._stats if h < oldest]:
                del self._stats[old]
        for name, value in kept.items():
            bucket[name] = bucket.get(name, 0) + value

    async def stats_read(self, since_hour: int) -> dict[str, int]:
        first, last = stats_window(since_hour, self._clock.now())
        totals: dict[str, int] = {}
        for hour, bucket in self._stats.items():
            if first <= hour <= last:
                for name, value in bucket.items():
                    totals[name] = totals.get(name, 0) + value
        return totals
