"""The embedded store, the default: memory for the hot path, SQLite for what
must survive a restart (SPEC §7).

Cache, breakers, idempotency and rate buckets are the memory mixins
themselves (`sidecar.store.memory`), answered from memory. What they change
that is worth keeping (cache entries, explicit keys' replay records,
breakers) is queued (`write_behind.PendingWrites`) and written behind, every
`flush_interval` seconds and at close, by one writer thread that owns the
only SQLite connection (WAL mode). No request waits for the disk; the price
is that a crash loses the last interval's changes (a replay record too: a
client retrying after a sidecar crash may reach the upstream again, where
the upstream Idempotency-Key still guards). Rate limit buckets stay in
memory: one sidecar runs per data dir, and a bucket is judged per request.

Named records, jobs, logs and the fleet's heartbeats go straight to the
file, one module each (`records`, `jobs`, `logs`, `fleet`: its statements
and its store mixin).

At open the schema is created or migrated, and what has not expired is
loaded back: the cache in write order, within the memory bound. In-flight
idempotency locks are not kept (their holders died with the process), nor
probe leases: a half-open breaker admits a new probe after a restart. The
store that gets the data dir's `OwnerLock` makes a dead process's jobs due.

sqlite3 errors are caught only here: at open and on durable writes they
become StoreUnavailable; a failing write-behind is logged, reported by
`health()` and retried, and never fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sidecar.clock import Clock
from sidecar.errors import StoreUnavailable
from sidecar.store.base import StoreHealth
from sidecar.store.embedded.budgets import EmbeddedBudgets
from sidecar.store.embedded.database import Database
from sidecar.store.embedded.fleet import EmbeddedFleet
from sidecar.store.embedded.jobs import EmbeddedJobs
from sidecar.store.embedded.logs import EmbeddedLogs
from sidecar.store.embedded.owner_lock import OwnerLock
from sidecar.store.embedded.records import EmbeddedRecords
from sidecar.store.embedded.sqlite import safe_cause
from sidecar.store.embedded.write_behind import PendingWrites
from sidecar.store.memory.breaker import MemoryBreakers
from sidecar.store.memory.cache import MemoryCache
from sidecar.store.memory.idempotency import MemoryIdempotency
from sidecar.store.memory.rate import MemoryRates

__all__ = ["EmbeddedStore", "OwnerLock"]

log = logging.getLogger("mirapi.store")

#: Expired rows are deleted at most this often (clock seconds).
SWEEP_EVERY = 300.0
#: After a failed write-behind, wait this long (real seconds) before retrying.
RETRY_AFTER_FAILURE = 1.0

_HEALTHY = StoreHealth("embedded")


class EmbeddedStore(
    MemoryCache,
    MemoryBreakers,
    MemoryIdempotency,
    MemoryRates,
    EmbeddedRecords,
    EmbeddedJobs,
    EmbeddedLogs,
    EmbeddedFleet,
    EmbeddedBudgets,
):
    """The memory store written behind to one SQLite file (`path` None: memory only)."""

    def __init__(
        self,
        path: Path | None,
        clock: Clock,
        cache_max_bytes: int = 64 * 1024**2,
        flush_interval: float = 0.05,
    ) -> None:
        self._clock = clock
        self._cache_max_bytes = cache_max_bytes
        self._flush_interval = flush_interval
        self._pending: PendingWrites | None = None
        self._database = None
        self._owner_lock: OwnerLock | None = None
        if path is not None:
            self._pending = PendingWrites()
            self._database = Database(path)
            self._owner_lock = OwnerLock(path.with_name(path.name + ".lock"))
        self._observer = self._pending
        self._executor = None
        self._writer: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._next_sweep = 0.0
        self._health = _HEALTHY
        super().__init__()

    async def open(self) -> None:
        if self._database is None or self._executor is not None:
            return
        # One thread: an sqlite3 connection belongs to the thread that made it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirapi-sqlite")
        try:
            await self._run("open", self._database.open)
            loaded = await self._run("load", self._database.load, self._clock.now())
        except StoreUnavailable:
            await self._shut_down()
            raise
        for key, entry in loaded.cache:
            self.load_cache(key, entry)
        for key, record in loaded.records:
            self.load_record(key, record)
        for host, status in loaded.breakers:
            self.load_breaker(host, status)
        await self._release_dead_leases()
        self._next_sweep = self._clock.now() + SWEEP_EVERY
        self._writer = asyncio.create_task(self._write_behind(), name="mirapi-sqlite-writer")

    async def _release_dead_leases(self) -> None:
        """As the data dir's one sidecar, make the jobs a dead process held due now."""
        assert self._database is not None and self._owner_lock is not None
        try:
            owner = self._owner_lock.acquire()
        except OSError as exc:
            log.warning("could not lock the data dir: %s", safe_cause(exc))
            return
        if not owner:
            return  # a running sidecar holds them: they are not dead
        try:
            released = await self._run(
                "jobs recovery", self._database.jobs_release_leases, self._clock.now()
            )
        except StoreUnavailable as exc:
            # Not fatal: their leases run out by themselves.
            log.warning("%s; interrupted jobs wait for their lease to end", exc.message)
            return
        if released:
            log.info("%d jobs interrupted by the last shutdown are due again", released)

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        try:
            await self.flush()
        except StoreUnavailable as exc:
            log.error("the last changes could not be saved: %s", exc.message)
        await self._shut_down()

    def health(self) -> StoreHealth:
        return self._health

    async def flush(self) -> None:
        """Write every pending change now; StoreUnavailable if that failed (they stay queued)."""
        if self._pending is None or self._database is None or self._executor is None:
            return
        async with self._flush_lock:
            batch = self._pending.take()
            now = self._clock.now()
            if now >= self._next_sweep:
                batch.sweep_before = now
            if not len(batch) and batch.sweep_before is None:
                return
            try:
                await self._run("write", self._database.write, batch, now)
            except StoreUnavailable as exc:
                self._pending.put_back(batch)
                if self._health.ok:
                    log.warning("%s; retrying", exc.message)
                self._health = StoreHealth("embedded", ok=False, reason=exc.message)
                raise
            if batch.sweep_before is not None:
                self._next_sweep = now + SWEEP_EVERY
            if not self._health.ok:
                log.info("the embedded database accepts writes again")
                self._health = _HEALTHY

    async def _write_behind(self) -> None:
        assert self._pending is not None
        while True:
            await self._pending.ready.wait()
            # Real time: gather what the next interval brings into one transaction.
            await asyncio.sleep(self._flush_interval)
            try:
                await self.flush()
            except StoreUnavailable:
                await asyncio.sleep(RETRY_AFTER_FAILURE)
            except Exception:
                log.exception("the embedded store's write-behind failed; retrying")
                await asyncio.sleep(RETRY_AFTER_FAILURE)

    async def _shut_down(self) -> None:
        if self._executor is None or self._database is None:
            return
        with contextlib.suppress(StoreUnavailable):
            await self._run("close", self._database.close)
        self._executor.shutdown(wait=False)
        self._executor = None
        if self._owner_lock is not None:
            self._owner_lock.release()
