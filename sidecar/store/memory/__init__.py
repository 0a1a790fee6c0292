"""The store in this process's memory: the hot path of the embedded store, and
the local fallback of the Redis one (SPEC §7).

One mixin per capability, one module each (`cache`, `breaker`,
`idempotency`, `rate`, `records`, `jobs`, `logs`, `fleet`), over `state.MemoryState`;
`MemoryStore` is all of them. Expired entries are purged lazily: when read,
when a bound pushes them out, or by an occasional sweep.
"""

from __future__ import annotations

from sidecar.clock import Clock
from sidecar.store.base import StoreHealth
from sidecar.store.memory.breaker import MemoryBreakers
from sidecar.store.memory.budgets import MemoryBudgets
from sidecar.store.memory.cache import MemoryCache
from sidecar.store.memory.fleet import MemoryFleet
from sidecar.store.memory.idempotency import EXPIRY_CHECK, RESULT_TTL, MemoryIdempotency
from sidecar.store.memory.jobs import MemoryJobs
from sidecar.store.memory.logs import MemoryLogs
from sidecar.store.memory.rate import MemoryRates
from sidecar.store.memory.records import MemoryRecords
from sidecar.store.memory.state import SWEEP_FLOOR, IdempotencyRecord, StoreObserver

__all__ = [
    "EXPIRY_CHECK",
    "RESULT_TTL",
    "SWEEP_FLOOR",
    "IdempotencyRecord",
    "MemoryStore",
    "StoreObserver",
]

_HEALTHY = StoreHealth("memory")


class MemoryStore(
    MemoryCache,
    MemoryBreakers,
    MemoryIdempotency,
    MemoryRates,
    MemoryRecords,
    MemoryJobs,
    MemoryLogs,
    MemoryFleet,
    MemoryBudgets,
):
    """A complete `Store` in memory; nothing survives the process."""

    def __init__(
        self,
        clock: Clock,
        cache_max_bytes: int = 64 * 1024**2,
        observer: StoreObserver | None = None,
    ) -> None:
        self._clock = clock
        self._cache_max_bytes = cache_max_bytes
        self._observer = observer
        super().__init__()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def health(self) -> StoreHealth:
        return _HEALTHY
