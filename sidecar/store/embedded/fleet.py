"""The embedded store's fleet: heartbeats in the file, so `mirapi sidecar list`
(another process) sees the data dir's sidecar; notices stay in this process
(the CLI signals the sidecar itself, mirapi_cli/propagation.py).

A heartbeat is its own small transaction, not fsynced: losing the last one
to a power cut loses nothing anyone relies on.
"""

from __future__ import annotations

from sidecar.store.embedded.sqlite import SQLite, decoded
from sidecar.store.embedded.state import EmbeddedState
from sidecar.store.fleet import Heartbeat, decode, encode
from sidecar.store.memory.fleet import MemoryFleet

_PUT_BEAT = "INSERT OR REPLACE INTO fleet (id, listed_until, data) VALUES (?, ?, ?)"
_DELETE_BEAT = "DELETE FROM fleet WHERE id = ?"
_DELETE_EXPIRED = "DELETE FROM fleet WHERE listed_until <= ?"
_SELECT_BEATS = "SELECT data FROM fleet WHERE listed_until > ? ORDER BY id"


class FleetRows(SQLite):
    """The statements of the `fleet` table."""

    def fleet_put(self, beat: Heartbeat, keep: float, now: float) -> None:
        with self._write_transaction(fsync=False) as conn:
            conn.execute(_DELETE_EXPIRED, (now,))
            conn.execute(_PUT_BEAT, (beat.id, beat.last_seen + keep, encode(beat)))

    def fleet_remove(self, sidecar_id: str) -> None:
        with self._write_transaction(fsync=False) as conn:
            conn.execute(_DELETE_BEAT, (sidecar_id,))

    def fleet_list(self, now: float) -> list[Heartbeat]:
        rows = self._connection().execute(_SELECT_BEATS, (now,))
        return decoded(rows, decode)


class EmbeddedFleet(MemoryFleet, EmbeddedState):
    async def fleet_put(self, beat: Heartbeat, keep: float) -> None:
        if self._database is None:
            return await super().fleet_put(beat, keep)
        await self._on_file("heartbeat", self._database.fleet_put, beat, keep, self._clock.now())

    async def fleet_remove(self, sidecar_id: str) -> None:
        if self._database is None:
            return await super().fleet_remove(sidecar_id)
        await self._on_file("heartbeat", self._database.fleet_remove, sidecar_id)

    async def fleet_list(self) -> list[Heartbeat]:
        if self._database is None:
            return await super().fleet_list()
        return await self._on_file("fleet read", self._database.fleet_list, self._clock.now())
