"""The Redis store's named records (routes, client keys, secrets):

    mirapi:KIND:{KIND}              hash     NAME -> the record (each kind's own encoding)
    mirapi:KIND:{KIND}:version      string   bumped by every write of that kind

Durable, not cached: they never expire. A put or a delete is one script
that also bumps the version, so a sidecar polling the version never misses
a write. A missing version key (a new server, or a flushed one) is started
from the wall clock in microseconds rather than 0, so a flush does not bring
back a version a sidecar already holds, and it sees the change.
"""

from __future__ import annotations

import time

from sidecar.store.records import RECORD_KINDS
from sidecar.store.redis.client import RedisBase, as_bytes, text

# KEYS: records hash, version. ARGV: name, data, replace ('1'/'0'), version seed.
RECORD_PUT = """
if ARGV[3] ~= '1' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[4]) end
redis.call('INCR', KEYS[2])
return 1
"""

# KEYS: records hash, version. ARGV: name, version seed.
RECORD_DELETE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[2]) end
redis.call('INCR', KEYS[2])
return 1
"""

# KEYS: records hash, version. The version and the records of one moment.
RECORDS_LOAD = """
return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}
"""


def _version_seed() -> int:
    """Where a missing record version starts: wall-clock microseconds, never repeated."""
    # Real time, not the injected clock: this orders versions, it expires nothing.
    return time.time_ns() // 1000


class RedisRecords(RedisBase):
    def __init__(self) -> None:
        super().__init__()
        self._record_put = self._client.register_script(RECORD_PUT)
        self._record_delete = self._client.register_script(RECORD_DELETE)
        self._records_load = self._client.register_script(RECORDS_LOAD)
        # Per kind: its hash and version, in one slot ({KIND}) read and written together.
        self._record_keys = {
            kind: [f"{self._prefix}{kind}:{{{kind}}}", f"{self._prefix}{kind}:{{{kind}}}:version"]
            for kind in RECORD_KINDS
        }

    async def records_load(self, kind: str) -> tuple[int, dict[str, bytes]]:
        version, flat = await self._call(self._records_load(keys=self._record_keys[kind]))
        records = {text(flat[i]): as_bytes(flat[i + 1]) for i in range(0, len(flat), 2)}
        return int(version), records

    async def records_version(self, kind: str) -> int:
        version = await self._call(self._client.get(self._record_keys[kind][1]))
        return 0 if version is None else int(version)

    async def record_put(self, kind: str, name: str, data: bytes, replace: bool) -> bool:
        written = await self._call(
            self._record_put(
                keys=self._record_keys[kind],
                args=[name, data, "1" if replace else "0", _version_seed()],
            )
        )
        return bool(int(written))

    async def record_delete(self, kind: str, name: str) -> bool:
        removed = await self._call(
            self._record_delete(keys=self._record_keys[kind], args=[name, _version_seed()])
        )
        return bool(int(removed))
