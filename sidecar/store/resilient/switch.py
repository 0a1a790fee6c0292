"""Healthy or degraded: which store the resilient wrapper answers from.

    healthy --(a Redis call fails)--> degraded --(a ping answers)--> healthy

The first call that finds Redis unreachable degrades the store; while
degraded no call touches Redis, so none pays a connect timeout. A
background task pings Redis every `retry_interval` seconds and switches
back as soon as it answers. The policies (`policies`, `idempotency`) read
`_degraded` and call `_degrade`.
"""

from __future__ import annotations

import asyncio
import logging

from sidecar.clock import Clock
from sidecar.errors import StoreUnavailable
from sidecar.store.base import Store, StoreHealth
from sidecar.store.redis import RedisStore

log = logging.getLogger("mirapi.store")

_HEALTHY = StoreHealth("redis")


class Switch:
    """The lifecycle of a Redis store with a local one beside it, and the switch between."""

    def __init__(
        self, primary: RedisStore, local: Store, clock: Clock, retry_interval: float = 1.0
    ) -> None:
        self._primary = primary
        self._local = local
        self._clock = clock
        self._retry_interval = retry_interval
        self._degraded = False
        self._reason: str | None = None
        #: The RedisStore's own (safe) message, for calls that do not fall back.
        self._cause: str | None = None
        self._trouble = asyncio.Event()
        self._closed = False
        self._watcher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._local.open()
        try:
            await self._primary.open()
        except StoreUnavailable as exc:
            # Start anyway: proxying must not wait for Redis.
            self._degrade(exc)
        self._watcher = asyncio.create_task(self._watch_redis(), name="mirapi-redis-watch")

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            # The flag, not only the cancel, ends the watcher: on Python 3.11
            # asyncio.wait_for (inside redis-py) can swallow a cancellation.
            self._trouble.set()
            self._watcher.cancel()
            await asyncio.wait({self._watcher})
            self._watcher = None
        await self._primary.close()
        await self._local.close()

    def health(self) -> StoreHealth:
        if self._degraded:
            return StoreHealth("redis", ok=False, reason=self._reason)
        return _HEALTHY

    @property
    def degraded(self) -> bool:
        """True while calls are answered from local state."""
        return self._degraded

    def _degrade(self, exc: StoreUnavailable) -> None:
        if self._degraded:
            return
        # The RedisStore's message is already safe: a short cause, never the URL.
        self._cause = exc.message
        self._reason = f"{exc.message}; using local state"
        self._degraded = True
        self._trouble.set()
        log.warning("%s until it answers again", self._reason)

    def _recover(self) -> None:
        self._degraded = False
        self._reason = None
        self._cause = None
        self._trouble.clear()
        log.info("redis answers again; shared state restored")

    async def _watch_redis(self) -> None:
        """While degraded, ping Redis every retry_interval; recover when it answers."""
        while True:
            await self._trouble.wait()
            if self._closed:
                return
            # Real time: a fake clock's sleep would return at once and spin.
            await asyncio.sleep(self._retry_interval)
            try:
                await self._primary.ping()
            except StoreUnavailable as exc:
                self._cause = exc.message
                self._reason = f"{exc.message}; using local state"
                continue
            if self._closed:
                return
            self._recover()
