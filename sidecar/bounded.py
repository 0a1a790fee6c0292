"""Lookup caches bounded by bytes, not only by count (issue 20).

`functools.lru_cache(maxsize=1024)` bounds the number of entries, but an
entry keyed by a request's URL, Host or header name is as large as the client
makes it: 1,024 URLs of 8 KiB, each kept parsed twice (httpx and yarl), is
tens of MB. A `ByteCache` keeps the newest entries whose estimated cost
(`cost(key)`: the key's length times a factor for what is derived from it,
plus a fixed overhead) adds up to at most `max_bytes`; an entry costing more
than an eighth of that is computed but never kept, so one huge key cannot
flush the whole cache.

Eviction is first in, first out: a hit costs one dict lookup, with no
reordering, and a hot key that is evicted by a stream of distinct ones is
computed again once. Every cache made by `memoize` registers itself, so
`configure(max_bytes)` (the `lookup_cache_max_bytes` setting) sizes them all
at start-up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sized
from typing import Any, Generic, TypeVar, cast

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: The default of the `lookup_cache_max_bytes` setting: each cache's budget.
#: About 400 parsed URLs or 1,000 header names: an app's usual set, several
#: times over, while four such caches filling up add about 1 MB.
DEFAULT_MAX_BYTES = 256 * 1024
#: What a dict slot, the key object and a small value cost beyond the key's text.
ENTRY_OVERHEAD = 200
#: The same for a parsed URL object (httpx.URL, yarl.URL), measured with
#: tracemalloc: about 650 bytes for a 50-character URL.
URL_OVERHEAD = 450
#: An entry costing more than max_bytes // this is never kept.
_LARGEST_SHARE = 8

_MISSING = object()
_CACHES: list[ByteCache[object, object]] = []
_budget = DEFAULT_MAX_BYTES


def text_cost(factor: int, overhead: int = ENTRY_OVERHEAD) -> Callable[[Any], int]:
    """The cost of a str or bytes key whose value holds about `factor` times its text."""

    def cost(key: Sized) -> int:
        return overhead + factor * len(key)

    return cost


class ByteCache(Generic[K, V]):
    """A dict of the newest entries whose summed `cost(key)` stays within `max_bytes`."""

    __slots__ = ("_cost", "_data", "_sizes", "max_bytes", "nbytes")

    def __init__(self, max_bytes: int, cost: Callable[[K], int]) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._cost = cost
        self._data: dict[K, V] = {}
        self._sizes: dict[K, int] = {}

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        """Keep `value` unless it alone is too large; evict the oldest to make room."""
        size = self._cost(key)
        if size * _LARGEST_SHARE > self.max_bytes:
            return
        old = self._sizes.pop(key, None)
        if old is not None:
            del self._data[key]
            self.nbytes -= old
        self._data[key] = value
        self._sizes[key] = size
        self.nbytes += size
        self._evict()

    def resize(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._evict()

    def clear(self) -> None:
        self._data.clear()
        self._sizes.clear()
        self.nbytes = 0

    def _evict(self) -> None:
        data, sizes = self._data, self._sizes
        while self.nbytes > self.max_bytes and sizes:
            oldest = next(iter(sizes))
            self.nbytes -= sizes.pop(oldest)
            del data[oldest]


def register(cache: ByteCache[K, V]) -> ByteCache[K, V]:
    """Let `configure` size `cache`; returns it."""
    _CACHES.append(cache)  # type: ignore[arg-type]
    return cache


def budget() -> int:
    """Each cache's budget as `configure` last set it: for caches made per instance."""
    return _budget


def configure(max_bytes: int) -> None:
    """Give every registered cache a budget of `max_bytes` (0: cache nothing)."""
    global _budget
    _budget = max_bytes
    for cache in _CACHES:
        cache.resize(max_bytes)


def memoize(cost: Callable[[Any], int]) -> Callable[[Callable[[K], V]], Callable[[K], V]]:
    """Cache a one-argument function in a registered `ByteCache` (as `.cache`)."""

    def decorate(function: Callable[[K], V]) -> Callable[[K], V]:
        cache: ByteCache[K, V] = register(ByteCache(DEFAULT_MAX_BYTES, cost))
        get, put = cache._data.get, cache.put

        @functools.wraps(function)
        def cached(key: K) -> V:
            value = get(key, _MISSING)
            if value is _MISSING:
                value = function(key)
                put(key, value)
            return cast(V, value)

        cached.cache = cache  # type: ignore[attr-defined]
        return cached

    return decorate
