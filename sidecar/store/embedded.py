"""The embedded store, the default: memory for the hot path, SQLite for what
must survive a restart (SPEC §7).

Every call is answered by a `MemoryStore`. What it changes that is worth
keeping (cache entries, explicit keys' replay records, breakers) is queued
and written behind, every `flush_interval` seconds and at close, by one
writer thread that owns the only SQLite connection (WAL mode). No request
waits for the disk; the price is that a crash loses the last interval's
changes (a replay record too: a client retrying after a sidecar crash may
reach the upstream again, where the upstream Idempotency-Key still guards).

At open the schema is created or migrated, and what has not expired is
loaded back: the cache in write order, within the memory bound. In-flight
idempotency locks are not kept (their holders died with the process), nor
probe leases: a half-open breaker admits a new probe after a restart.

Named records (routes, client keys, secrets) are not written behind: they
are configuration, written by `mirapi routes|keys|secrets` (often from
another process while a sidecar runs), so each write is its own transaction
on the writer thread, fsynced at commit, and awaited; a failure raises
StoreUnavailable. The kind's version row is bumped in the same transaction,
and read afresh from the file at every `records_version` call, so a sidecar
sees another process's writes.

Jobs are durable like records: each add, save, claim and renew is its own
transaction on the writer thread, awaited (adds and saves fsynced, since a
202 promises the job survives; a claim or renew lost to a power cut only
makes the job due again sooner). Reads go to the file too, so `mirapi jobs`
in another process sees the sidecar's writes.

One sidecar runs per data dir, so at open any job still owned belongs to a
dead process: it is made due at once (owner cleared) so it runs again right
away. Only the store that holds an exclusive `flock` on `<db>.lock` does
this (and holds it until close), so a `mirapi` command opened next to a
running sidecar does not take that sidecar's leases away; a store that did
not get the lock leaves dead leases to run out by themselves (`job_lease`).

Observability (events, request records, stats) goes to the file too, for
`mirapi events tail`, `replay` and `stats` in another process, but its
writes are not on the request path: a background flusher in the sidecar
batches them, and each call here is one transaction on the writer thread,
committed without an fsync (synchronous=NORMAL in WAL): a power cut may
lose the last second of them, never the file. Trimming to the bounds is in
the same transaction. Reads go to the file. Rate limit buckets stay in
memory: one sidecar runs per data dir, and a bucket is judged per request.

The file itself (tables, schema, migrations, statements) is `sqlite.Database`;
the queue of changes not yet written is `write_behind.PendingWrites`.

sqlite3 errors are caught only here: at open and on record writes they become
StoreUnavailable; a failing write-behind is logged, reported by `health()`
and retried, and never fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar

from sidecar.clock import Clock
from sidecar.errors import StoreUnavailable
from sidecar.jobs.model import Job
from sidecar.store.base import (
    Admission,
    BreakerStatus,
    Claim,
    RateDecision,
    StoredResponse,
    StoreHealth,
    WaitResult,
    check_counts,
    parse_seq_cursor,
    stats_window,
)
from sidecar.store.memory import MemoryStore
from sidecar.store.sqlite import Database, safe_cause
from sidecar.store.write_behind import PendingWrites

T = TypeVar("T")

log = logging.getLogger("mirapi.store")

#: Expired rows are deleted at most this often (clock seconds).
SWEEP_EVERY = 300.0
#: After a failed write-behind, wait this long (real seconds) before retrying.
RETRY_AFTER_FAILURE = 1.0


class OwnerLock:
    """An exclusive, non-blocking `flock` on a file: held by the data dir's sidecar.

    The kernel drops it when the process dies (SIGKILL included), so the
    next store to open after a crash gets it.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        """True when this store now holds the lock (or already did)."""
        if self._file is not None:
            return True
        fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600)
        file = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        except BaseException:
            file.close()
            raise
        self._file = file
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the flock
            self._file = None


class EmbeddedStore:
    """A `MemoryStore` written behind to one SQLite file (`path` None: memory only)."""

    def __init__(
        self,
        path: Path | None,
        clock: Clock,
        cache_max_bytes: int = 64 * 1024**2,
        flush_interval: float = 0.05,
    ) -> None:
        self._clock = clock
        self._flush_interval = flush_interval
        self._pending: PendingWrites | None = None
        self._database: Database | None = None
        self._owner_lock: OwnerLock | None = None
        if path is not None:
            self._pending = PendingWrites()
            self._database = Database(path)
            self._owner_lock = OwnerLock(path.with_name(path.name + ".lock"))
        self._memory = MemoryStore(clock, cache_max_bytes, observer=self._pending)
        self._executor: ThreadPoolExecutor | None = None
        self._writer: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._next_sweep = 0.0
        self._health = _HEALTHY

    # -- lifecycle -----------------------------------------------------------

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
            self._memory.load_cache(key, entry)
        for key, record in loaded.records:
            self._memory.load_record(key, record)
        for host, status in loaded.breakers:
            self._memory.load_breaker(host, status)
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

    async def _run(self, doing: str, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` on the writer thread; sqlite and OS errors become StoreUnavailable."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"embedded database {doing} failed: {safe_cause(exc)}") from exc

    async def _shut_down(self) -> None:
        if self._executor is None or self._database is None:
            return
        with contextlib.suppress(StoreUnavailable):
            await self._run("close", self._database.close)
        self._executor.shutdown(wait=False)
        self._executor = None
        if self._owner_lock is not None:
            self._owner_lock.release()

    # -- the Store calls: answered from memory -------------------------------

    async def cache_get(self, key: str) -> StoredResponse | None:
        return await self._memory.cache_get(key)

    async def cache_put(self, key: str, entry: StoredResponse) -> None:
        await self._memory.cache_put(key, entry)

    async def breaker_admit(self, host: str, cooldown: float, probe_lease: float) -> Admission:
        return await self._memory.breaker_admit(host, cooldown, probe_lease)

    async def breaker_record(self, host: str, success: bool, threshold: int) -> BreakerStatus:
        return await self._memory.breaker_record(host, success, threshold)

    async def breaker_status(self, host: str) -> BreakerStatus:
        return await self._memory.breaker_status(host)

    async def idem_claim(self, key: str, fingerprint: str, token: str, lock_ttl: float) -> Claim:
        return await self._memory.idem_claim(key, fingerprint, token, lock_ttl)

    async def idem_renew(self, key: str, token: str, lock_ttl: float) -> bool:
        return await self._memory.idem_renew(key, token, lock_ttl)

    async def idem_finish(
        self,
        key: str,
        token: str,
        response: StoredResponse | None,
        keep_until: float | None,
    ) -> None:
        await self._memory.idem_finish(key, token, response, keep_until)

    async def idem_wait(self, key: str, token: str, timeout: float) -> WaitResult:
        return await self._memory.idem_wait(key, token, timeout)

    # -- named records: straight to the file (memory only without one) ---------

    async def records_load(self, kind: str) -> tuple[int, dict[str, bytes]]:
        if self._database is None:
            return await self._memory.records_load(kind)
        return await self._on_file(f"{kind} read", self._database.records_load, kind)

    async def records_version(self, kind: str) -> int:
        if self._database is None:
            return await self._memory.records_version(kind)
        return await self._on_file(f"{kind} read", self._database.records_version, kind)

    async def record_put(self, kind: str, name: str, data: bytes, replace: bool) -> bool:
        if self._database is None:
            return await self._memory.record_put(kind, name, data, replace)
        return await self._on_file(
            f"{kind} write", self._database.record_put, kind, name, data, replace
        )

    async def record_delete(self, kind: str, name: str) -> bool:
        if self._database is None:
            return await self._memory.record_delete(kind, name)
        return await self._on_file(f"{kind} write", self._database.record_delete, kind, name)

    # -- jobs: straight to the file (memory only without one) -------------------

    async def job_add(self, job: Job) -> None:
        if self._database is None:
            return await self._memory.job_add(job)
        await self._on_file("job write", self._database.job_write, job, None)

    async def job_claim(self, owner: str, lease: float) -> Job | None:
        if self._database is None:
            return await self._memory.job_claim(owner, lease)
        now = self._clock.now()
        return await self._on_file("job claim", self._database.job_claim, owner, now, now + lease)

    async def job_renew(self, job_id: str, owner: str, lease: float) -> bool:
        if self._database is None:
            return await self._memory.job_renew(job_id, owner, lease)
        until = self._clock.now() + lease
        return await self._on_file("job renew", self._database.job_renew, job_id, owner, until)

    async def job_save(self, job: Job, owner: str | None) -> bool:
        if self._database is None:
            return await self._memory.job_save(job, owner)
        return await self._on_file("job write", self._database.job_write, job, owner)

    async def job_get(self, job_id: str) -> Job | None:
        if self._database is None:
            return await self._memory.job_get(job_id)
        return await self._on_file("job read", self._database.job_get, job_id)

    async def job_list(self, status: str | None = None, limit: int = 100) -> list[Job]:
        if self._database is None:
            return await self._memory.job_list(status, limit)
        return await self._on_file("job read", self._database.job_list, status, max(0, limit))

    async def job_depth(self) -> int:
        if self._database is None:
            return await self._memory.job_depth()
        return await self._on_file("job read", self._database.job_depth)

    async def job_purge(self, finished_before: float) -> int:
        if self._database is None:
            return await self._memory.job_purge(finished_before)
        return await self._on_file("job purge", self._database.job_purge, finished_before)

    async def webhook_secret(self, new: str) -> str:
        if self._database is None:
            return await self._memory.webhook_secret(new)
        return await self._on_file("webhook secret", self._database.webhook_secret, new)

    # -- observability: straight to the file (memory only without one) ---------

    async def events_add(self, items: Sequence[bytes]) -> None:
        if self._database is None:
            return await self._memory.events_add(items)
        if items:
            await self._on_file("events write", self._database.events_add, list(items))

    async def events_read(self, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        if self._database is None:
            return await self._memory.events_read(after, limit)
        after_id = None if after is None else parse_seq_cursor(after)
        if limit <= 0:
            return []
        return await self._on_file("events read", self._database.events_read, after_id, limit)

    async def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None:
        if self._database is None:
            return await self._memory.requests_put(items)
        if items:
            await self._on_file("requests write", self._database.requests_put, list(items))

    async def request_get(self, request_id: str) -> bytes | None:
        if self._database is None:
            return await self._memory.request_get(request_id)
        return await self._on_file("requests read", self._database.request_get, request_id)

    async def stats_add(self, hour: int, counts: Mapping[str, int]) -> None:
        if self._database is None:
            return await self._memory.stats_add(hour, counts)
        kept = check_counts(counts)
        if kept:
            current = int(self._clock.now() // 3600)
            await self._on_file("stats write", self._database.stats_add, hour, kept, current)

    async def stats_read(self, since_hour: int) -> dict[str, int]:
        if self._database is None:
            return await self._memory.stats_read(since_hour)
        first, last = stats_window(since_hour, self._clock.now())
        return await self._on_file("stats read", self._database.stats_read, first, last)

    async def rate_take(self, key: str, limit: int, period: float) -> RateDecision:
        return await self._memory.rate_take(key, limit, period)

    async def _on_file(self, doing: str, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` on the writer thread, once the store is open."""
        if self._executor is None:
            raise StoreUnavailable(f"embedded database {doing} failed: the store is not open")
        return await self._run(doing, work, *args)


_HEALTHY = StoreHealth("embedded")
