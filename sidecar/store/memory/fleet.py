"""The memory store's fleet: heartbeats in a dict, notices to this process's listeners.

Only this process sees them: the memory-only store is for tests and
one-shot runs (and the embedded store keeps heartbeats in its file).
"""

from __future__ import annotations

import asyncio

from sidecar.store.fleet import Heartbeat, NoticeHandler
from sidecar.store.memory.state import MemoryState


class MemoryNotices(MemoryState):
    """Change notices to the listeners of this process (the embedded store's too)."""

    def __init__(self) -> None:
        super().__init__()
        self._notice_handlers: list[NoticeHandler] = []

    async def fleet_notify(self, kind: str) -> int:
        handlers = list(self._notice_handlers)
        for handler in handlers:
            handler(kind)
        return len(handlers)

    async def fleet_listen(self, handler: NoticeHandler) -> None:
        self._notice_handlers.append(handler)
        try:
            # Until cancelled: the future is never resolved.
            await asyncio.get_running_loop().create_future()
        finally:
            self._notice_handlers.remove(handler)


class MemoryFleet(MemoryNotices):
    def __init__(self) -> None:
        super().__init__()
        #: id -> (heartbeat, listed until).
        self._fleet: dict[str, tuple[Heartbeat, float]] = {}

    async def fleet_put(self, beat: Heartbeat, keep: float) -> None:
        self._fleet[beat.id] = (beat, beat.last_seen + keep)

    async def fleet_remove(self, sidecar_id: str) -> None:
        self._fleet.pop(sidecar_id, None)

    async def fleet_list(self) -> list[Heartbeat]:
        now = self._clock.now()
        for sidecar_id in [i for i, (_, until) in self._fleet.items() if until <= now]:
            del self._fleet[sidecar_id]
        return [beat for _, (beat, _) in sorted(self._fleet.items())]
