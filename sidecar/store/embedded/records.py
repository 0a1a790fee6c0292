"""The embedded store's named records (routes, client keys, secrets): straight
to the file, never written behind.

They are configuration, written by `mirapi routes|keys|secrets` (often from
another process while a sidecar runs), so each write is its own transaction
on the writer thread, fsynced at commit, and awaited; a failure raises
StoreUnavailable. The kind's version row (in `meta`) is bumped in the same
transaction, and read afresh from the file at every `records_version` call,
so a sidecar sees another process's writes.
"""

from __future__ import annotations

import sqlite3

from sidecar.store.embedded.sqlite import SQLite
from sidecar.store.embedded.state import EmbeddedState
from sidecar.store.memory.records import MemoryRecords

_SELECT_RECORDS = "SELECT name, data FROM records WHERE kind = ?"
_RECORD_EXISTS = "SELECT 1 FROM records WHERE kind = ? AND name = ?"
_PUT_RECORD = "INSERT OR REPLACE INTO records (kind, name, data) VALUES (?, ?, ?)"
_DELETE_RECORD = "DELETE FROM records WHERE kind = ? AND name = ?"
_BUMP_VERSION = (
    "INSERT INTO meta (key, value) VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET value = value + 1"
)


class RecordRows(SQLite):
    """The statements of the `records` table and the kinds' versions."""

    def records_load(self, kind: str) -> tuple[int, dict[str, bytes]]:
        # One read transaction: the version and the rows of one snapshot.
        with self._transaction("BEGIN") as conn:
            version = _records_version(conn, kind)
            rows = conn.execute(_SELECT_RECORDS, (kind,))
            records = {str(name): bytes(data) for name, data in rows}
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


def _version_key(kind: str) -> str:
    """The meta row holding `kind`'s version: 'routes_version', 'keys_version', ..."""
    return f"{kind}_version"


def _records_version(conn: sqlite3.Connection, kind: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_version_key(kind),)).fetchone()
    return 0 if row is None else int(row[0])


class EmbeddedRecords(MemoryRecords, EmbeddedState):
    async def records_load(self, kind: str) -> tuple[int, dict[str, bytes]]:
        if self._database is None:
            return await super().records_load(kind)
        return await self._on_file(f"{kind} read", self._database.records_load, kind)

    async def records_version(self, kind: str) -> int:
        if self._database is None:
            return await super().records_version(kind)
        return await self._on_file(f"{kind} read", self._database.records_version, kind)

    async def record_put(self, kind: str, name: str, data: bytes, replace: bool) -> bool:
        if self._database is None:
            return await super().record_put(kind, name, data, replace)
        return await self._on_file(
            f"{kind} write", self._database.record_put, kind, name, data, replace
        )

    async def record_delete(self, kind: str, name: str) -> bool:
        if self._database is None:
            return await super().record_delete(kind, name)
        return await self._on_file(f"{kind} write", self._database.record_delete, kind, name)
