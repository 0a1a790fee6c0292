"""The Redis store's smart cache: `mirapi:cache:{KEY}`, a string holding
`StoredResponse.encode()`. Redis bounds its memory itself (maxmemory and an
eviction policy)."""

from __future__ import annotations

from sidecar.store.cache import StoredResponse
from sidecar.store.redis.client import GC_GRACE, RedisBase, as_bytes, millis


class RedisCache(RedisBase):
    async def cache_get(self, key: str) -> StoredResponse | None:
        data = await self._call(self._client.get(self._key("cache", key)))
        if data is None:
            return None
        entry = StoredResponse.decode(as_bytes(data))
        return entry if entry.expires_at > self._clock.now() else None

    async def cache_put(self, key: str, entry: StoredResponse) -> None:
        ttl = entry.expires_at - self._clock.now()
        if ttl <= 0:
            return
        await self._call(
            self._client.set(self._key("cache", key), entry.encode(), px=millis(ttl + GC_GRACE))
        )
