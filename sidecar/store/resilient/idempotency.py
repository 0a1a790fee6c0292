"""Idempotency falls back too, with one refinement: a key stays where its lock
was taken, so a retried payment is replayed rather than sent again.

  - a key claimed locally is renewed, finished and waited on locally, and
    its later claims stay local for `LOCAL_KEY_LINGER` seconds after it
    finished (as long as its replay record, for an explicit key), even once
    Redis is back;
  - a lock held in Redis while Redis is unreachable is renewed blindly (the
    call in flight goes on), its finish is dropped, and its waiters get
    LOST, so they claim again (locally) and make their own call.
    Single-flight across sidecars is lost during an outage; no request
    fails because of it.
"""

from __future__ import annotations

from sidecar.clock import Clock
from sidecar.errors import StoreUnavailable
from sidecar.store.base import Store
from sidecar.store.cache import StoredResponse
from sidecar.store.idempotency import Claim, ClaimOutcome, WaitOutcome, WaitResult
from sidecar.store.redis import RedisStore
from sidecar.store.resilient.switch import Switch

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


class LocalFirstIdempotency(Switch):
    """The idempotency capability of the resilient store."""

    def __init__(
        self, primary: RedisStore, local: Store, clock: Clock, retry_interval: float = 1.0
    ) -> None:
        super().__init__(primary, local, clock, retry_interval)
        self._local_locks = LocalLocks(clock)

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
