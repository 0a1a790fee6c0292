"""The embedded store's SQLite file: schema, migrations and every statement.

`Database` owns the one connection (WAL mode); every method runs on the
embedded store's writer thread (an sqlite3 connection belongs to the thread
that made it). Besides retrying a busy file at open, sqlite3 errors leave
it as they are: the store turns them into StoreUnavailable.

Tables:

    cache        key, expires_at, entry (StoredResponse.encode())
    idempotency  key, fingerprint, keep_until, response
    breaker      host, state, failures, opened_at, saved_at
    records      kind, name, data (routes, client keys, secrets: each kind's own
                 encoding)
    meta         key, value       ('<kind>_version': bumped by every write of
                                   that kind; 'webhook_secret': created once)
    jobs         id, due_at, status, created_at, finished_at, done, owner,
                 data (sidecar.jobs.model.encode_job())
    events       id (AUTOINCREMENT: the cursor, never reused), data
    requests     seq (AUTOINCREMENT: write order), id (the request id, unique),
                 data
    stats        hour, name, value (one counter of one hour bucket)

The three observability tables are bounded in the transaction that writes
them: events and requests keep their newest EVENTS_MAX / REQUESTS_MAX rows,
stats drops buckets older than STATS_KEEP_HOURS. Events are only ever
appended, so their ids are consecutive and the trim is one index lookup
(`id <= MAX(id) - N`); a replaced request record leaves a gap in `seq`, so
that trim finds the N-th newest row instead (REQUESTS_MAX steps of the index).

A job row's columns are the truth for `due_at` and `owner` (a claim changes
only them); the other columns are copies of fields of `data`, written with
it, for the queries.

The schema version is SQLite's `user_version`; `MIGRATIONS[n]` takes a file
from version n to n + 1, all steps in one transaction at open, so a file
written by an older sidecar is upgraded in place. A file from a newer
sidecar is refused rather than misread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sidecar.errors import StoreUnavailable
from sidecar.jobs.model import Job, decode_job, encode_job
from sidecar.store.base import (
    EVENTS_MAX,
    REQUESTS_MAX,
    STATS_KEEP_HOURS,
    BreakerState,
    BreakerStatus,
    StoredResponse,
)
from sidecar.store.memory import IdempotencyRecord
from sidecar.store.write_behind import Batch

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
    # 3 -> 4: routes become one kind of named record, beside client keys and secrets.
    (
        """CREATE TABLE IF NOT EXISTS records (
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (kind, name)
        )""",
        "INSERT OR IGNORE INTO records (kind, name, data) SELECT 'routes', name, data FROM routes",
        "DROP TABLE IF EXISTS routes",
    ),
    # 4 -> 5: observability: the event log, request records for replay, hourly stats.
    (
        """CREATE TABLE IF NOT EXISTS events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            data BLOB NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS requests (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            data BLOB NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS stats (
            hour INTEGER NOT NULL,
            name TEXT NOT NULL,
            value INTEGER NOT NULL,
            PRIMARY KEY (hour, name)
        ) WITHOUT ROWID""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

#: A breaker nobody failed against for this long is forgotten (closed), as in Redis.
BREAKER_IDLE_TTL = 24 * 3600.0


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

    # -- named records: each write its own durable transaction ------------------

    def records_load(self, kind: str) -> tuple[int, dict[str, bytes]]:
        conn = self._connection()
        # One read transaction: the version and the rows of one snapshot.
        conn.execute("BEGIN")
        try:
            version = _records_version(conn, kind)
            rows = conn.execute(_SELECT_RECORDS, (kind,))
            records = {str(name): bytes(data) for name, data in rows}
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return version, records

    def records_version(self, kind: str) -> int:
        # Outside a transaction every statement reads the file afresh (WAL),
        # so another process's commit is seen at the next call.
        return _records_version(self._connection(), kind)

    def record_put(self, kind: str, name: str, data: bytes, replace: bool) -> bool:
        with self._write_transaction(fsync=True) as conn:
            if not replace and conn.execute(_RECORD_EXISTS, (kind, name)).fetchone() is not None:
                return False
            conn.execute(_PUT_RECORD, (kind, name, data))
            conn.execute(_BUMP_VERSION, (_version_key(kind),))
        return True

    def record_delete(self, kind: str, name: str) -> bool:
        with self._write_transaction(fsync=True) as conn:
            if conn.execute(_DELETE_RECORD, (kind, name)).rowcount == 0:
                return False
            conn.execute(_BUMP_VERSION, (_version_key(kind),))
        return True

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

    # -- observability: each call its own transaction, not fsynced -------------
    # Batches from a background flusher: losing the last one to a power cut
    # is acceptable (synchronous=NORMAL in WAL still never corrupts the file).

    def events_add(self, items: Sequence[bytes]) -> None:
        with self._write_transaction(fsync=False) as conn:
            conn.executemany("INSERT INTO events (data) VALUES (?)", [(data,) for data in items])
            conn.execute(
                "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (EVENTS_MAX,)
            )

    def events_read(self, after: int | None, limit: int) -> list[tuple[str, bytes]]:
        conn = self._connection()
        if after is None:
            rows = conn.execute(
                "SELECT id, data FROM events ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
            rows.reverse()
        else:
            rows = conn.execute(
                "SELECT id, data FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
            ).fetchall()
        return [(str(number), bytes(data)) for number, data in rows]

    def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None:
        with self._write_transaction(fsync=False) as conn:
            # REPLACE deletes the row with the same id: the new one gets a new, higher seq.
            conn.executemany("INSERT OR REPLACE INTO requests (id, data) VALUES (?, ?)", items)
            conn.execute(
                "DELETE FROM requests WHERE seq <="
                " (SELECT seq FROM requests ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (REQUESTS_MAX,),
            )

    def request_get(self, request_id: str) -> bytes | None:
        row = (
            self._connection()
            .execute("SELECT data FROM requests WHERE id = ?", (request_id,))
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def stats_add(self, hour: int, counts: dict[str, int], current_hour: int) -> None:
        with self._write_transaction(fsync=False) as conn:
            conn.executemany(
                "INSERT INTO stats (hour, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (hour, name) DO UPDATE SET value = value + excluded.value",
                [(hour, name, value) for name, value in counts.items()],
            )
            conn.execute("DELETE FROM stats WHERE hour < ?", (current_hour - STATS_KEEP_HOURS,))

    def stats_read(self, first_hour: int, last_hour: int) -> dict[str, int]:
        rows = self._connection().execute(
            "SELECT name, SUM(value) FROM stats WHERE hour BETWEEN ? AND ? GROUP BY name",
            (first_hour, last_hour),
        )
        return {str(name): int(total) for name, total in rows}

    @contextlib.contextmanager
    def _write_transaction(self, fsync: bool) -> Iterator[sqlite3.Connection]:
        """A write transaction that commits on a normal exit; `fsync`: synchronous=FULL.

        The write-behind may lose its last interval to a power cut; a route or
        job someone was told is saved may not, so those writes are fsynced.
        """
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


_SELECT_RECORDS = "SELECT name, data FROM records WHERE kind = ?"
_RECORD_EXISTS = "SELECT 1 FROM records WHERE kind = ? AND name = ?"
_PUT_RECORD = "INSERT OR REPLACE INTO records (kind, name, data) VALUES (?, ?, ?)"
_DELETE_RECORD = "DELETE FROM records WHERE kind = ? AND name = ?"
_BUMP_VERSION = (
    "INSERT INTO meta (key, value) VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET value = value + 1"
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


def _version_key(kind: str) -> str:
    """The meta row holding `kind`'s version: 'routes_version', 'keys_version', ..."""
    return f"{kind}_version"


def _records_version(conn: sqlite3.Connection, kind: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_version_key(kind),)).fetchone()
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
