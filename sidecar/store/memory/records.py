"""The memory store's named records (routes, client keys, secrets): a dict per
kind and a version counter per kind bumped by every write.

Only this process sees them: the memory-only store is for tests and
one-shot runs, and the Redis store's fallback never holds records.
"""

from __future__ import annotations

from sidecar.store.memory.state import MemoryState
from sidecar.store.records import RECORD_KINDS


class MemoryRecords(MemoryState):
    def __init__(self) -> None:
        super().__init__()
        self._named: dict[str, dict[str, bytes]] = {kind: {} for kind in RECORD_KINDS}
        self._record_versions: dict[str, int] = dict.fromkeys(RECORD_KINDS, 0)

    async def records_load(self, kind: str) -> tuple[int, dict[str, bytes]]:
        return self._record_versions[kind], dict(self._named[kind])

    async def records_version(self, kind: str) -> int:
        return self._record_versions[kind]

    async def record_put(self, kind: str, name: str, data: bytes, replace: bool) -> bool:
        records = self._named[kind]
        if not replace and name in records:
            return False
        records[name] = data
        self._record_versions[kind] += 1
        return True

    async def record_delete(self, kind: str, name: str) -> bool:
        if self._named[kind].pop(name, None) is None:
            return False
        self._record_versions[kind] += 1
        return True
