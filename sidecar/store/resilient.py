"""Redis with a local fallback: losing Redis never fails a proxied request (SPEC §7).

`ResilientStore` forwards every call to Redis. The first call that finds
Redis unreachable is answered from the local store instead, and so are the
calls after it: while degraded no request touches Redis, so none pays a
connect timeout. A background task pings Redis every `retry_interval`
seconds and switches back as soon as it answers.

    healthy --(a Redis call fails)--> degraded --(a ping answers)--> healthy

What falls back, and what that means:
  - smart cache and breakers start empty locally; what was written locally
    while degraded stays there (it is not copied to Redis on recovery);
  - an idempotency lock lives where it was taken: a key claimed locally is
    renewed, finished and waited on locally, and its later claims stay local
    for `LOCAL_KEY_LINGER` seconds after it finished (as long as its replay
    record, for an explicit key), even once Redis is back, so a retried
    payment is replayed rather than sent again;
  - a lock held in Redis while Redis is unreachable is renewed blindly (the
    call in flight goes on), its finish is dropped, and its waiters get LOST,
    so they claim again (locally) and make their own call. Single-flight
    across sidecars is lost during an outage; no request fails because of it.

Routes do not fall back: they are configuration every sidecar must agree on,
so they are read and written in Redis only. While degraded a route call
raises StoreUnavailable without touching Redis (a sidecar's RouteTable keeps
the routes it last read; `mirapi routes` reports the store unavailable), and
a route call that finds Redis gone degrades the store like any other call.

Jobs and the webhook secret do not fall back either, for a stronger reason:
an accepted job must survive this process, so it is accepted only into
Redis. While degraded every job call (queue depth too) raises
StoreUnavailable at once: the client gets a 503 and knows nothing was
accepted, and workers simply find nothing to claim until Redis is back.

Observability is split. Its writes (events, request records, stats) come
from a background flusher and must never fail: while degraded they go to
the local store, best effort (they stay there, bounded, and are not copied
to Redis on recovery: the shared log misses the outage's events). Its reads
are for commands (`events tail`, `replay`, `stats`), which must show the
shared state or say they cannot: they go to Redis only and raise
StoreUnavailable while degraded. The rate limit is on the request path, so
it falls back to a local bucket: each sidecar limits alone during an outage
(a client may get up to one limit per sidecar), and proxying goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from sidecar.clock import Clock
from sidecar.errors import StoreUnavailable
from sidecar.store.base import (
    Admission,
    BreakerStatus,
    Claim,
    ClaimOutcome,
    RateDecision,
    Store,
    StoredResponse,
    StoreHealth,
    WaitOutcome,
    WaitResult,
)
from sidecar.store.redis import RedisStore

if TYPE_CHECKING:
    from sidecar.jobs.model import Job

T = TypeVar("T")

log = logging.getLogger("mirapi.store")

#: How long a key stays local after its local lock finished: its waiters read
#: the shared response there, and a replay record kept there is found again.
LOCAL_KEY_LINGER = 60.0


class LocalLocks:
    """Which idempotency keys and tokens live in the local store, until when (clock time)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._until: dict[str, dict[str, float]] = {}
        self._prune_above = 1024

    def add(self, key: str, token: str, until: float) -> None:
        self._until.setdefault(key, {})[token] = until
        if len(self._until) > self._prune_above:
            self.prune()

    def holds(self, key: str, token: str) -> bool:
        return token in self._until.get(key, {})

    def has_key(self, key: str) -> bool:
        tokens = self._until.get(key)
        if tokens is None:
            return False
        now = self._clock.now()
        return any(until > now for until in tokens.values())

    def prune(self) -> None:
        """Forget what ended; amortised by pruning only when the map doubled."""
        now = self._clock.now()
        for key in list(self._until):
            tokens = {t: u for t, u in self._until[key].items() if u > now}
            if tokens:
                self._until[key] = tokens
            else:
                del self._until[key]
        self._prune_above = max(1024, 2 * len(self._until))


class ResilientStore:
    """A `Store` on Redis that answers from `local` while Redis is unreachable."""

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
        self._local_locks = LocalLocks(clock)

    # -- lifecycle -----------------------------------------------------------

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

    # -- smart cache -------------------------------------------------------

    async def cache_get(self, key: str) -> StoredResponse | None:
        return await self._either(lambda store: store.cache_get(key))

    async def cache_put(self, key: str, entry: StoredResponse) -> None:
        await self._either(lambda store: store.cache_put(key, entry))

    # -- circuit breaker ---------------------------------------------------

    async def breaker_admit(self, host: str, cooldown: float, probe_lease: float) -> Admission:
        return await self._either(lambda store: store.breaker_admit(host, cooldown, probe_lease))

    async def breaker_record(self, host: str, success: bool, threshold: int) -> BreakerStatus:
        return await self._either(lambda store: store.breaker_record(host, success, threshold))

    async def breaker_status(self, host: str) -> BreakerStatus:
        return await self._either(lambda store: store.breaker_status(host))

    # -- idempotency ---------------------------------------------------------

    async def idem_claim(self, key: str, fingerprint: str, token: str, lock_ttl: float) -> Claim:
        if not self._degraded and not self._local_locks.has_key(key):
            try:
                return await self._primary.idem_claim(key, fingerprint, token, lock_ttl)
            except StoreUnavailable as exc:
                self._degrade(exc)
        claim = await self._local.idem_claim(key, fingerprint, token, lock_ttl)
        if claim.outcome is ClaimOutcome.ACQUIRED:
            self._local_locks.add(key, token, self._clock.now() + lock_ttl)
        return claim

    async def idem_renew(self, key: str, token: str, lock_ttl: float) -> bool:
        if self._local_locks.holds(key, token):
            renewed = await self._local.idem_renew(key, token, lock_ttl)
            if renewed:
                self._local_locks.add(key, token, self._clock.now() + lock_ttl)
            return renewed
        if self._degraded:
            return True  # unknowable until Redis answers; the call in flight goes on
        try:
            return await self._primary.idem_renew(key, token, lock_ttl)
        except StoreUnavailable as exc:
            self._degrade(exc)
            return True

    async def idem_finish(
        self,
        key: str,
        token: str,
        response: StoredResponse | None,
        keep_until: float | None,
    ) -> None:
        if self._local_locks.holds(key, token):
            await self._local.idem_finish(key, token, response, keep_until)
            linger = self._clock.now() + LOCAL_KEY_LINGER
            self._local_locks.add(key, token, max(linger, keep_until or 0.0))
            return
        if self._degraded:
            return  # the Redis lock expires by itself; its waiters get LOST
        try:
            await self._primary.idem_finish(key, token, response, keep_until)
        except StoreUnavailable as exc:
            self._degrade(exc)

    async def idem_wait(self, key: str, token: str, timeout: float) -> WaitResult:
        # A token taken locally is always in LocalLocks, so the wait follows the claim.
        if self._local_locks.holds(key, token):
            return await self._local.idem_wait(key, token, timeout)
        if self._degraded:
            return WaitResult(WaitOutcome.LOST)
        try:
            return await self._primary.idem_wait(key, token, timeout)
        except StoreUnavailable as exc:
            self._degrade(exc)
            return WaitResult(WaitOutcome.LOST)

    # -- named records: Redis only ------------------------------------------------

    async def records_load(self, kind: str) -> tuple[int, dict[str, bytes]]:
        return await self._shared(lambda: self._primary.records_load(kind))

    async def records_version(self, kind: str) -> int:
        return await self._shared(lambda: self._primary.records_version(kind))

    async def record_put(self, kind: str, name: str, data: bytes, replace: bool) -> bool:
        return await self._shared(lambda: self._primary.record_put(kind, name, data, replace))

    async def record_delete(self, kind: str, name: str) -> bool:
        return await self._shared(lambda: self._primary.record_delete(kind, name))

    # -- jobs: Redis only ---------------------------------------------------------

    async def job_add(self, job: Job) -> None:
        await self._shared(lambda: self._primary.job_add(job))

    async def job_claim(self, owner: str, lease: float) -> Job | None:
        return await self._shared(lambda: self._primary.job_claim(owner, lease))

    async def job_renew(self, job_id: str, owner: str, lease: float) -> bool:
        return await self._shared(lambda: self._primary.job_renew(job_id, owner, lease))

    async def job_save(self, job: Job, owner: str | None) -> bool:
        return await self._shared(lambda: self._primary.job_save(job, owner))

    async def job_get(self, job_id: str) -> Job | None:
        return await self._shared(lambda: self._primary.job_get(job_id))

    async def job_list(self, status: str | None = None, limit: int = 100) -> list[Job]:
        return await self._shared(lambda: self._primary.job_list(status, limit))

    async def job_depth(self) -> int:
        return await self._shared(self._primary.job_depth)

    async def job_purge(self, finished_before: float) -> int:
        return await self._shared(lambda: self._primary.job_purge(finished_before))

    async def webhook_secret(self, new: str) -> str:
        return await self._shared(lambda: self._primary.webhook_secret(new))

    # -- observability: writes and the rate limit fall back, reads do not -------

    async def events_add(self, items: Sequence[bytes]) -> None:
        await self._either(lambda store: store.events_add(items))

    async def events_read(self, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        return await self._shared(lambda: self._primary.events_read(after, limit))

    async def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None:
        await self._either(lambda store: store.requests_put(items))

    async def request_get(self, request_id: str) -> bytes | None:
        return await self._shared(lambda: self._primary.request_get(request_id))

    async def stats_add(self, hour: int, counts: Mapping[str, int]) -> None:
        await self._either(lambda store: store.stats_add(hour, counts))

    async def stats_read(self, since_hour: int) -> dict[str, int]:
        return await self._shared(lambda: self._primary.stats_read(since_hour))

    async def rate_take(self, key: str, limit: int, period: float) -> RateDecision:
        return await self._either(lambda store: store.rate_take(key, limit, period))

    # -- switching -----------------------------------------------------------

    async def _shared(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call` on Redis, which alone holds config and jobs; StoreUnavailable while degraded."""
        if self._degraded:
            raise StoreUnavailable(self._cause or "redis unreachable")
        try:
            return await call()
        except StoreUnavailable as exc:
            self._degrade(exc)
            raise

    async def _either(self, call: Callable[[Store], Awaitable[T]]) -> T:
        """`call` on Redis while it answers, else (and from then on) on local state."""
        if not self._degraded:
            try:
                return await call(self._primary)
            except StoreUnavailable as exc:
                self._degrade(exc)
        return await call(self._local)

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


_HEALTHY = StoreHealth("redis")
