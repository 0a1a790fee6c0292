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

Routes are not written behind: they are configuration, written by `mirapi
routes` (often from another process while a sidecar runs), so each route
write is its own transaction on the writer thread, fsynced at commit, and
awaited; a failure raises StoreUnavailable. The `routes_version` row is
bumped in the same transaction, and read afresh from the file at every
`routes_version` call, so a sidecar sees another process's writes.

Jobs are durable like routes: each add, save, claim and renew is its own
transaction on the writer thread, awaited (adds and saves fsynced, since a
202 promises the job survives; a claim or renew lost to a power cut only
makes the job due again sooner). Reads go to the file too, so `mirapi jobs`
in another process sees the sidecar's writes. The row's columns are the
truth for `due_at` and `owner` (a claim changes only them); the other
columns are copies of fields of `data`, written with it, for the queries.

One sidecar runs per data dir, so at open any job still owned belongs to a
dead process: it is made due at once (owner cleared) so it runs again right
away. Only the store that holds an exclusive `flock` on `<db>.lock` does
this (and holds it until close), so a `mirapi` command opened next to a
running sidecar does not take that sidecar's leases away; a store that did
not get the lock leaves dead leases to run out by themselves (`job_lease`).

Tables (room left for later ones: keys, events):

    cache        key, expires_at, entry (StoredResponse.encode())
    idempotency  key, fingerprint, keep_until, response
    breaker      host, state, failures, opened_at, saved_at
    routes       name, data (sidecar.routes.encode())
    meta         key, value       ('routes_version': bumped by every route write;
                                   'webhook_secret': created once)
    jobs         id, due_at, status, created_at, finished_at, done, owner,
                 data (sidecar.jobs.model.encode_job())

The schema version is SQLite's `user_version`; `MIGRATIONS[n]` takes a file
from version n to n + 1, all steps in one transaction at open, so a file
written by an older sidecar is upgraded in place. A file from a newer
sidecar is refused rather than misread.

sqlite3 errors are caught only here: at open and on route writes they become
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
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from sidecar.clock import Clock
from sidecar.errors import StoreUnavailable
from sidecar.jobs.model import Job, decode_job, encode_job
from sidecar.store.base import (
    Admission,
    BreakerState,
    BreakerStatus,
    Claim,
    StoredResponse,
    StoreHealth,
    WaitResult,
)
from sidecar.store.memory import IdempotencyRecord, MemoryStore

T = TypeVar("T")

log = logging.getLogger("mirapi.store")

#: Statements taking the schema from version n (the index) to n + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: the first schema (a new file; IF NOT EXISTS as it always was).
    (
        """CREATE TABLE IF NOT EXISTS cache (
            key TEXT PRIMARY KEY,
            expires_at REAL NOT NULL,
            entry BLOB NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS cache_expires_at ON cache (expires_at)",
        """CREATE TABLE IF NOT EXISTS idempotency (
            key TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            keep_until REAL NOT NULL,
            response BLOB NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS idempotency_keep_until ON idempotency (keep_until)",
        """CREATE TABLE IF NOT EXISTS breaker (
            host TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            failures INTEGER NOT NULL,
            opened_at REAL NOT NULL,
            saved_at REAL NOT NULL
        )""",
    ),
    # 1 -> 2: routes, and their version.
    (
        "CREATE TABLE IF NOT EXISTS routes (name TEXT PRIMARY KEY, data BLOB NOT NULL)",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL)",
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('routes_version', 0)",
    ),
    # 2 -> 3: jobs (the webhook secret lives in meta).
    (
        """CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY,
            due_at REAL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            finished_at REAL,
            done INTEGER NOT NULL,
            owner TEXT,
            data BLOB NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS jobs_due_at ON jobs (due_at) WHERE due_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS jobs_created_at ON jobs (created_at)",
        "CREATE INDEX IF NOT EXISTS jobs_finished_at ON jobs (finished_at) WHERE done = 1",
        "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner) WHERE owner IS NOT NULL",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

#: Expired rows are deleted at most this often (clock seconds).
SWEEP_EVERY = 300.0
#: A breaker nobody failed against for this long is forgotten (closed), as in Redis.
BREAKER_IDLE_TTL = 24 * 3600.0
#: After a failed write-behind, wait this long (real seconds) before retrying.
RETRY_AFTER_FAILURE = 1.0


@dataclass(slots=True)
class Batch:
    """Changes for one transaction; None deletes the row."""

    cache: dict[str, StoredResponse | None] = field(default_factory=dict)
    records: dict[str, IdempotencyRecord] = field(default_factory=dict)
    breakers: dict[str, BreakerStatus | None] = field(default_factory=dict)
    #: When set: delete what expired by then.
    sweep_before: float | None = None

    def __len__(self) -> int:
        return len(self.cache) + len(self.records) + len(self.breakers)


class PendingWrites:
    """The write-behind queue: the latest change to each row, in change order."""

    def __init__(self) -> None:
        self._batch = Batch()
        self.ready = asyncio.Event()

    def cache_stored(self, key: str, entry: StoredResponse) -> None:
        _set_last(self._batch.cache, key, entry)
        self.ready.set()

    def cache_dropped(self, key: str) -> None:
        _set_last(self._batch.cache, key, None)
        self.ready.set()

    def record_kept(self, key: str, record: IdempotencyRecord) -> None:
        self._batch.records[key] = record
        self.ready.set()

    def breaker_saved(self, host: str, status: BreakerStatus | None) -> None:
        self._batch.breakers[host] = status
        self.ready.set()

    def take(self) -> Batch:
        batch, self._batch = self._batch, Batch()
        self.ready.clear()
        return batch

    def put_back(self, batch: Batch) -> None:
        """Queue a batch that failed again, under the changes made since."""
        for name in ("cache", "records", "breakers"):
            newer = getattr(self._batch, name)
            setattr(self._batch, name, getattr(batch, name) | newer)
        if len(self._batch):
            self.ready.set()


def _set_last(changes: dict[str, T], key: str, value: T) -> None:
    # Re-inserted at the end: rows are written, and loaded back, in change order.
    changes.pop(key, None)
    changes[key] = value


@dataclass(slots=True)
class Loaded:
    cache: list[tuple[str, StoredResponse]]
    records: list[tuple[str, IdempotencyRecord]]
    breakers: list[tuple[str, BreakerStatus]]


class Database:
    """The SQLite file; every method runs on the one writer thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        if not self._path.exists():
            # It holds response bodies: readable by the owner only (WAL files follow).
            os.close(os.open(self._path, os.O_CREAT | os.O_WRONLY, 0o600))
        # Several processes may open a new file at once (a sidecar starting,
        # `mirapi routes` commands): switching it to WAL takes an exclusive
        # lock, and SQLite answers "locked" at once rather than waiting, so
        # the first steps are retried for a while.
        deadline = time.monotonic() + OPEN_PATIENCE
        while True:
            conn = sqlite3.connect(self._path, timeout=5.0, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                _migrate(conn)
            except sqlite3.OperationalError as error:
                conn.close()
                if not _is_busy(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
                continue
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            return

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def load(self, now: float) -> Loaded:
        conn = self._connection()
        cache = _decoded(
            conn.execute(
                "SELECT key, entry FROM cache WHERE expires_at > ? ORDER BY rowid", (now,)
            ),
            lambda key, entry: (key, StoredResponse.decode(entry)),
        )
        records = _decoded(
            conn.execute(
                "SELECT key, fingerprint, keep_until, response FROM idempotency"
                " WHERE keep_until > ?",
                (now,),
            ),
            lambda key, fingerprint, keep_until, response: (
                key,
                IdempotencyRecord(fingerprint, StoredResponse.decode(response), keep_until),
            ),
        )
        breakers = _decoded(
            conn.execute(
                "SELECT host, state, failures, opened_at FROM breaker WHERE saved_at > ?",
                (now - BREAKER_IDLE_TTL,),
            ),
            lambda host, state, failures, opened_at: (
                host,
                BreakerStatus(BreakerState(state), int(failures), float(opened_at)),
            ),
        )
        return Loaded(cache, records, breakers)

    def write(self, batch: Batch, now: float) -> None:
        """One transaction: the batch, then the sweep if due."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._write_cache(conn, batch.cache)
            conn.executemany(
                "INSERT OR REPLACE INTO idempotency (key, fingerprint, keep_until, response)"
                " VALUES (?, ?, ?, ?)",
                [
                    (key, r.fingerprint, r.keep_until, r.response.encode())
                    for key, r in batch.records.items()
                ],
            )
            self._write_breakers(conn, batch.breakers, now)
            if batch.sweep_before is not None:
                self._sweep(conn, batch.sweep_before)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _write_cache(conn: sqlite3.Connection, changes: dict[str, StoredResponse | None]) -> None:
        for key, entry in changes.items():
            if entry is None:
                conn.execute("DELETE FROM cache WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO cache (key, expires_at, entry) VALUES (?, ?, ?)",
                    (key, entry.expires_at, entry.encode()),
                )

    @staticmethod
    def _write_breakers(
        conn: sqlite3.Connection, changes: dict[str, BreakerStatus | None], now: float
    ) -> None:
        for host, status in changes.items():
            if status is None:
                conn.execute("DELETE FROM breaker WHERE host = ?", (host,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO breaker"
                    " (host, state, failures, opened_at, saved_at) VALUES (?, ?, ?, ?, ?)",
                    (host, status.state.value, status.failures, status.opened_at, now),
                )

    @staticmethod
    def _sweep(conn: sqlite3.Connection, now: float) -> None:
        conn.execute("DELETE FROM cache WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM idempotency WHERE keep_until <= ?", (now,))
        conn.execute("DELETE FROM breaker WHERE saved_at <= ?", (now - BREAKER_IDLE_TTL,))

    # -- routes: each write its own durable transaction -------------------------

    def routes_load(self) -> tuple[int, dict[str, bytes]]:
        conn = self._connection()
        # One read transaction: the version and the rows of one snapshot.
        conn.execute("BEGIN")
        try:
            version = _routes_version(conn)
            routes = {str(name): bytes(data) for name, data in conn.execute(_SELECT_ROUTES)}
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return version, routes

    def routes_version(self) -> int:
        # Outside a transaction every statement reads the file afresh (WAL),
        # so another process's commit is seen at the next call.
        return _routes_version(self._connection())

    def route_put(self, name: str, data: bytes, replace: bool) -> bool:
        with self._route_transaction() as conn:
            if not replace and conn.execute(_ROUTE_EXISTS, (name,)).fetchone() is not None:
                return False
            conn.execute("INSERT OR REPLACE INTO routes (name, data) VALUES (?, ?)", (name, data))
            conn.execute(_BUMP_ROUTES_VERSION)
        return True

    def route_delete(self, name: str) -> bool:
        with self._route_transaction() as conn:
            if conn.execute("DELETE FROM routes WHERE name = ?", (name,)).rowcount == 0:
                return False
            conn.execute(_BUMP_ROUTES_VERSION)
        return True

    @contextlib.contextmanager
    def _route_transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that commits on a normal exit, fsynced (synchronous=FULL)."""
        conn = self._connection()
        # The write-behind may lose its last interval to a power cut; a route
        # someone was told is saved may not. Route writes are rare: fsync them.
        conn.execute("PRAGMA synchronous=FULL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("PRAGMA synchronous=NORMAL")

    # -- jobs: each write its own transaction ----------------------------------

    def job_write(self, job: Job, owner: str | None) -> bool:
        """Insert or replace the job (owner cleared); with `owner`, only while it holds it."""
        with self._write_transaction(fsync=True) as conn:
            if owner is not None:
                row = conn.execute("SELECT owner FROM jobs WHERE id = ?", (job.id,)).fetchone()
                if row is None or row[0] != owner:
                    return False
            conn.execute(_PUT_JOB, _job_row(job))
        return True

    def job_claim(self, owner: str, now: float, lease_until: float) -> Job | None:
        with self._write_transaction(fsync=False) as conn:
            row = conn.execute(_FIRST_DUE, (now,)).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET due_at = ?, owner = ? WHERE id = ?", (lease_until, owner, row[0])
            )
        return decode_job(row[1]).with_(due_at=lease_until, owner=owner)

    def job_renew(self, job_id: str, owner: str, lease_until: float) -> bool:
        with self._write_transaction(fsync=False) as conn:
            renewed = conn.execute(
                "UPDATE jobs SET due_at = ? WHERE id = ? AND owner = ?",
                (lease_until, job_id, owner),
            ).rowcount
        return renewed > 0

    def job_get(self, job_id: str) -> Job | None:
        row = (
            self._connection()
            .execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        return None if row is None else _row_job(*row)

    def job_list(self, status: str | None, limit: int) -> list[Job]:
        conn = self._connection()
        order = "ORDER BY created_at DESC, id DESC LIMIT ?"
        if status is None:
            rows = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs {order}", (limit,))
        else:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = ? {order}", (status, limit)
            )
        return [_row_job(*row) for row in rows]

    def job_depth(self) -> int:
        (count,) = self._connection().execute("SELECT COUNT(*) FROM jobs WHERE done = 0").fetchone()
        return int(count)

    def job_purge(self, finished_before: float) -> int:
        with self._write_transaction(fsync=False) as conn:
            return conn.execute(
                "DELETE FROM jobs WHERE done = 1 AND finished_at < ?", (finished_before,)
            ).rowcount

    def jobs_release_leases(self, now: float) -> int:
        """Make every owned job due now: its owner died with its process."""
        with self._write_transaction(fsync=True) as conn:
            return conn.execute(
                "UPDATE jobs SET due_at = ?, owner = NULL WHERE owner IS NOT NULL", (now,)
            ).rowcount

    def webhook_secret(self, new: str) -> str:
        with self._write_transaction(fsync=True) as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('webhook_secret', ?)", (new,)
            )
            (secret,) = conn.execute(
                "SELECT value FROM meta WHERE key = 'webhook_secret'"
            ).fetchone()
        return str(secret)

    @contextlib.contextmanager
    def _write_transaction(self, fsync: bool) -> Iterator[sqlite3.Connection]:
        """A write transaction that commits on a normal exit; `fsync`: synchronous=FULL."""
        conn = self._connection()
        if fsync:
            conn.execute("PRAGMA synchronous=FULL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            if fsync:
                conn.execute("PRAGMA synchronous=NORMAL")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the database is not open")
        return self._conn


_SELECT_ROUTES = "SELECT name, data FROM routes"
_ROUTE_EXISTS = "SELECT 1 FROM routes WHERE name = ?"
_BUMP_ROUTES_VERSION = (
    "INSERT INTO meta (key, value) VALUES ('routes_version', 1)"
    " ON CONFLICT (key) DO UPDATE SET value = value + 1"
)


_JOB_COLUMNS = "data, due_at, owner"
_FIRST_DUE = (
    "SELECT id, data FROM jobs WHERE due_at IS NOT NULL AND due_at <= ? ORDER BY due_at, id LIMIT 1"
)
_PUT_JOB = (
    "INSERT OR REPLACE INTO jobs"
    " (id, due_at, status, created_at, finished_at, done, owner, data)"
    " VALUES (?, ?, ?, ?, ?, ?, NULL, ?)"
)


def _job_row(job: Job) -> tuple[object, ...]:
    """The columns of `_PUT_JOB`, copied from the job itself (owner: none)."""
    return (
        job.id,
        job.due_at,
        job.status,
        job.created_at,
        job.finished_at,
        1 if job.phase == "done" else 0,
        encode_job(job.with_(owner=None)),
    )


def _row_job(data: bytes, due_at: float | None, owner: str | None) -> Job:
    # The columns, not the blob, hold the lease: a claim writes only them.
    return decode_job(data).with_(due_at=due_at, owner=owner)


def _routes_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'routes_version'").fetchone()
    return 0 if row is None else int(row[0])


#: How long opening waits for other processes creating or migrating the file.
OPEN_PATIENCE = 10.0


def _is_busy(error: sqlite3.OperationalError) -> bool:
    """True for SQLite's "database is locked" / "busy": another process holds it."""
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _user_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(version)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the file to SCHEMA_VERSION; refuse a file from a newer sidecar."""
    version = _user_version(conn)
    if version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Again under the write lock: another process may have just migrated.
            version = _user_version(conn)
            for step in MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    if version > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"the embedded database has schema {version}, newer than this mirapi's"
            f" ({SCHEMA_VERSION}): upgrade mirapi"
        )


def _decoded(rows: sqlite3.Cursor, build: Callable[..., T]) -> list[T]:
    """`build(*row)` for each row; a row that does not decode is skipped and logged."""
    built: list[T] = []
    skipped = 0
    for row in rows:
        try:
            built.append(build(*row))
        except (ValueError, KeyError, TypeError, IndexError):
            skipped += 1
    if skipped:
        log.warning("skipped %d unreadable rows of the embedded database", skipped)
    return built


def safe_cause(exc: BaseException) -> str:
    """A short reason that is safe to show: an SQLite error name, never a path."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


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

    # -- routes: straight to the file (memory only without one) ----------------

    async def routes_load(self) -> tuple[int, dict[str, bytes]]:
        if self._database is None:
            return await self._memory.routes_load()
        return await self._on_file("routes read", self._database.routes_load)

    async def routes_version(self) -> int:
        if self._database is None:
            return await self._memory.routes_version()
        return await self._on_file("routes read", self._database.routes_version)

    async def route_put(self, name: str, data: bytes, replace: bool) -> bool:
        if self._database is None:
            return await self._memory.route_put(name, data, replace)
        return await self._on_file("route write", self._database.route_put, name, data, replace)

    async def route_delete(self, name: str) -> bool:
        if self._database is None:
            return await self._memory.route_delete(name)
        return await self._on_file("route write", self._database.route_delete, name)

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

    async def _on_file(self, doing: str, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` on the writer thread, once the store is open."""
        if self._executor is None:
            raise StoreUnavailable(f"embedded database {doing} failed: the store is not open")
        return await self._run(doing, work, *args)


_HEALTHY = StoreHealth("embedded")
