"""The embedded store's SQLite file: the connection, the schema and its migrations.

`SQLite` owns the one connection (WAL mode); every method runs on the
embedded store's writer thread (an sqlite3 connection belongs to the thread
that made it). Besides retrying a busy file at open, sqlite3 errors leave
it as they are: the store turns them into StoreUnavailable. Each
capability's statements are a mixin over it (`HotRows` in write_behind,
`RecordRows`, `JobRows`, `LogRows`), put together as `database.Database`.

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
    fleet        id, listed_until, data (sidecar.store.fleet.encode(): the
                 sidecars' heartbeats)
    llm_*        LLM budgets, reservations and spend (see embedded/budgets.py)

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from sidecar.errors import StoreUnavailable

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
    # 5 -> 6: the fleet: each running sidecar's heartbeat.
    (
        """CREATE TABLE IF NOT EXISTS fleet (
            id TEXT PRIMARY KEY,
            listed_until REAL NOT NULL,
            data BLOB NOT NULL
        )""",
    ),
    # 6 -> 7: LLM budgets, their reservations and the spend per scope and day.
    (
        """CREATE TABLE IF NOT EXISTS llm_budgets (
            scope TEXT PRIMARY KEY,
            limit_nano INTEGER NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS llm_spend (
            day TEXT NOT NULL,
            scope TEXT NOT NULL,
            spent_nano INTEGER NOT NULL DEFAULT 0,
            reserved_nano INTEGER NOT NULL DEFAULT 0,
            requests INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (day, scope)
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS llm_held (
            id TEXT PRIMARY KEY,
            day TEXT NOT NULL,
            amount_nano INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            scopes TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS llm_held_day_expires_at ON llm_held (day, expires_at)",
        """CREATE TABLE IF NOT EXISTS llm_finished (
            id TEXT PRIMARY KEY,
            at REAL NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS llm_finished_at ON llm_finished (at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

#: How long opening waits for other processes creating or migrating the file.
OPEN_PATIENCE = 10.0


class SQLite:
    """The file's one connection; every method runs on the one writer thread."""

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

    @contextlib.contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """A transaction that commits on a normal exit and rolls back otherwise."""
        conn = self._connection()
        conn.execute(begin)
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

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
            with self._transaction() as conn:
                yield conn
        finally:
            if fsync:
                conn.execute("PRAGMA synchronous=NORMAL")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the database is not open")
        return self._conn


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


def decoded(rows: sqlite3.Cursor, build: Callable[..., T]) -> list[T]:
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
