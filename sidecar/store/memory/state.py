"""What every capability of the memory store shares: the clock and the observer.

Each capability is a mixin over `MemoryState` with its own dicts, set up in
its `__init__` (cooperative: it calls `super().__init__()`), so a store is
the list of mixins it is made of. Plain dicts on one event loop, so every
method is atomic without a lock.

A `StoreObserver` is told of every change worth keeping past a restart (the
embedded store writes them behind to SQLite); the `load_*` methods put such
state back at start without telling it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sidecar.clock import Clock
from sidecar.store.breaker import BreakerStatus
from sidecar.store.cache import StoredResponse

#: The idempotency maps (and the rate buckets) are swept once they hold this
#: many entries (then twice what survived the last sweep), so sweeping costs
#: O(1) per call amortised.
SWEEP_FLOOR = 1024


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """An explicit key's finished response, replayed until `keep_until`."""

    fingerprint: str
    response: StoredResponse
    keep_until: float


class StoreObserver(Protocol):
    """Told, synchronously, of each change worth keeping past a restart."""

    def cache_stored(self, key: str, entry: StoredResponse) -> None:
        """`entry` is now the cache entry of `key`."""

    def cache_dropped(self, key: str) -> None:
        """`key` left the cache (evicted, expired or superseded)."""

    def record_kept(self, key: str, record: IdempotencyRecord) -> None:
        """`record` is now the replay record of `key`."""

    def breaker_saved(self, host: str, status: BreakerStatus | None) -> None:
        """The breaker of `host` is now `status`; None when forgotten (closed)."""


class MemoryState:
    """The base of every memory capability; the store sets these before `__init__`."""

    _clock: Clock
    _observer: StoreObserver | None
