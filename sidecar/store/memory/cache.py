"""The memory store's smart cache: an LRU bounded by the total
`StoredResponse.size` of its entries.

An entry bigger than the whole bound is not stored (and a bound of 0 stores
nothing); a put always drops the key's older entry, which the new answer
supersedes. Expired entries are purged when read or when the LRU pushes
them out.
"""

from __future__ import annotations

from collections import OrderedDict

from sidecar.store.cache import StoredResponse
from sidecar.store.memory.state import MemoryState


class MemoryCache(MemoryState):
    #: Set by the store before `__init__`.
    _cache_max_bytes: int

    def __init__(self) -> None:
        super().__init__()
        # key -> (entry, its size); least recently used first.
        self._cache: OrderedDict[str, tuple[StoredResponse, int]] = OrderedDict()
        self._cache_bytes = 0

    def load_cache(self, key: str, entry: StoredResponse) -> None:
        """Put `entry` back as the most recently used, unless it expired."""
        self._put(key, entry, notify=False)

    async def cache_get(self, key: str) -> StoredResponse | None:
        slot = self._cache.get(key)
        if slot is None:
            return None
        if slot[0].expires_at <= self._clock.now():
            self._drop(key)
            return None
        self._cache.move_to_end(key)
        return slot[0]

    async def cache_put(self, key: str, entry: StoredResponse) -> None:
        self._put(key, entry, notify=True)

    def _put(self, key: str, entry: StoredResponse, notify: bool) -> None:
        superseded = key in self._cache
        if superseded:
            self._cache_bytes -= self._cache.pop(key)[1]
        size = entry.size
        if size > self._cache_max_bytes or entry.expires_at <= self._clock.now():
            if superseded and self._observer is not None:
                self._observer.cache_dropped(key)
            return
        while self._cache_bytes + size > self._cache_max_bytes:
            oldest = next(iter(self._cache))
            self._drop(oldest)
        self._cache[key] = (entry, size)
        self._cache_bytes += size
        if notify and self._observer is not None:
            self._observer.cache_stored(key, entry)

    def _drop(self, key: str) -> None:
        self._cache_bytes -= self._cache.pop(key)[1]
        if self._observer is not None:
            self._observer.cache_dropped(key)
