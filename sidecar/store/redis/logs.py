"""The Redis store's logs:

    mirapi:events:{events}          stream   entries {e: event}; the entry id is the
                                             cursor (capped at EVENTS_MAX)
    mirapi:requests:{requests}      zset     request id -> write order (the newest
                                             REQUESTS_MAX)
    mirapi:requests:{requests}:ID   string   the request record of ID
    mirapi:stats:{stats}:HOUR       hash     counter name -> count, for one hour

Events are one stream shared by every sidecar, so its entry ids (server
time, then a sequence) order all sidecars' events and serve as cursors; one
script appends a batch and trims the stream. Request records are strings
under one tag with a zset index that one script keeps at REQUESTS_MAX
(deleting the records it drops); each also has a long expiry, a safety net
for an install that stops writing. Stats are a hash per hour bucket
(HINCRBY in one MULTI, expiring after STATS_KEEP_HOURS), read with one
pipeline of HGETALL over the hours of `stats_window`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from sidecar.store.logs import (
    EVENTS_MAX,
    REQUESTS_MAX,
    STATS_KEEP_HOURS,
    check_counts,
    stats_window,
)
from sidecar.store.redis.client import RedisBase, as_bytes, millis, text

#: Events or request records sent per script call (bounds one call's size).
WRITE_BATCH = 500
#: The safety-net expiry of request records and their index.
REQUEST_TTL = 7 * 24 * 3600.0
#: A stream entry id: milliseconds, a dash, a sequence number.
_STREAM_ID = re.compile(r"[0-9]+-[0-9]+", re.ASCII)

# KEYS: the event stream. ARGV: the most entries kept, then each event's data.
# Approximate trimming on each XADD keeps a big batch bounded cheaply; the
# exact trim at the end keeps the log at exactly its bound (removing the few
# oldest entries of one stream node: cheap, once a batch).
EVENTS_ADD = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[1])
return #ARGV - 1
"""

# KEYS: the index (zset: request id -> write order). ARGV: the record key
# prefix, the most records kept, the expiry (ms), then id, data for each record.
# A record's order is one past the highest in the index, so a replaced record
# becomes the newest and the order needs no counter of its own; the records
# past the bound are deleted with their index entries. The expiry is only a
# safety net for an install that stops writing.
REQUESTS_PUT = """
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local order = 0
if top[2] then order = tonumber(top[2]) end
for i = 4, #ARGV, 2 do
  order = order + 1
  redis.call('SET', ARGV[1] .. ARGV[i], ARGV[i + 1], 'PX', ARGV[3])
  redis.call('ZADD', KEYS[1], order, ARGV[i])
end
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if extra > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, extra - 1)) do
    redis.call('DEL', ARGV[1] .. id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


def _stream_events(
    entries: list[tuple[bytes | str | None, dict[bytes | str, bytes | str] | None]] | None,
) -> list[tuple[str, bytes]]:
    """(cursor, data) of stream entries as XRANGE replies them (an entry without data: skipped)."""
    events: list[tuple[str, bytes]] = []
    for entry_id, fields in entries or ():
        data = None if fields is None else fields.get(b"e")
        if entry_id is not None and data is not None:
            events.append((text(entry_id), as_bytes(data)))
    return events


class RedisLogs(RedisBase):
    def __init__(self) -> None:
        super().__init__()
        self._events_add = self._client.register_script(EVENTS_ADD)
        self._requests_put = self._client.register_script(REQUESTS_PUT)
        self._events_key = f"{self._prefix}events:{{events}}"
        self._requests_index = f"{self._prefix}requests:{{requests}}"
        self._requests_prefix = f"{self._requests_index}:"
        self._stats_prefix = f"{self._prefix}stats:{{stats}}:"

    async def events_add(self, items: Sequence[bytes]) -> None:
        for start in range(0, len(items), WRITE_BATCH):
            chunk = items[start : start + WRITE_BATCH]
            await self._call(self._events_add(keys=[self._events_key], args=[EVENTS_MAX, *chunk]))

    async def events_read(self, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        if after is not None and not _STREAM_ID.fullmatch(after):
            raise ValueError("not an event cursor of this store")
        if limit <= 0:
            return []
        if after is None:
            newest = await self._call(self._client.xrevrange(self._events_key, count=limit))
            return _stream_events(newest)[::-1]
        # "(" makes the start exclusive: the events after the cursor's.
        later = await self._call(
            self._client.xrange(self._events_key, min=f"({after}", count=limit)
        )
        return _stream_events(later)

    async def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None:
        head: list[str | bytes | int] = [self._requests_prefix, REQUESTS_MAX, millis(REQUEST_TTL)]
        for start in range(0, len(items), WRITE_BATCH):
            flat = list(head)
            for request_id, data in items[start : start + WRITE_BATCH]:
                flat += (request_id, data)
            await self._call(self._requests_put(keys=[self._requests_index], args=flat))

    async def request_get(self, request_id: str) -> bytes | None:
        data = await self._call(self._client.get(self._requests_prefix + request_id))
        return None if data is None else as_bytes(data)

    async def stats_add(self, hour: int, counts: Mapping[str, int]) -> None:
        kept = check_counts(counts)
        if not kept:
            return
        key = f"{self._stats_prefix}{hour}"
        # MULTI: the counters of one flush land together or not at all.
        pipe = self._client.pipeline(transaction=True)
        for name, value in kept.items():
            pipe.hincrby(key, name, value)
        pipe.expire(key, (STATS_KEEP_HOURS + 1) * 3600)
        await self._call(pipe.execute())

    async def stats_read(self, since_hour: int) -> dict[str, int]:
        first, last = stats_window(since_hour, self._clock.now())
        pipe = self._client.pipeline(transaction=False)
        for hour in range(first, last + 1):
            pipe.hgetall(f"{self._stats_prefix}{hour}")
        buckets = await self._call(pipe.execute())
        totals: dict[str, int] = {}
        for bucket in buckets:
            for name, value in bucket.items():
                counter = text(name)
                totals[counter] = totals.get(counter, 0) + int(value)
        return totals
