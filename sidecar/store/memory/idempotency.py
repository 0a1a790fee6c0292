"""The memory store's idempotency keys: one lock per key, the explicit keys'
records until `keep_until`, and each finished holder's response for its
waiters for `RESULT_TTL` seconds.

A response is kept for waiters only when a claim was told IN_FLIGHT with
that token (nobody else can know it), so an uncontended request keeps
nothing. Waiters sleep on an event set by `idem_finish`, and look at the
clock every `EXPIRY_CHECK` seconds of real time to notice a holder whose
lock ran out. Expired entries are swept once the maps have doubled.

Replay records hold whole answers for 24 h, so they are bounded by bytes
(`REPLAY_MAX_BYTES`): past it the oldest is forgotten here (the embedded
store's file keeps its copy), and a duplicate of that key is sent again,
with the same `Idempotency-Key` upstream, which Stripe-like APIs dedupe.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sidecar.store.cache import StoredResponse
from sidecar.store.idempotency import Claim, ClaimOutcome, WaitOutcome, WaitResult
from sidecar.store.memory.state import SWEEP_FLOOR, IdempotencyRecord, MemoryState

#: How long a finished holder's response waits for its waiters (clock seconds).
RESULT_TTL = 60.0
#: How often (real seconds) a waiter checks the clock for the holder's expiry.
EXPIRY_CHECK = 0.03
#: Bytes of replay records kept in memory (bodies, headers, keys).
REPLAY_MAX_BYTES = 16 * 1024 * 1024
#: What a record costs beyond its body and headers (objects, the key, a dict slot).
_RECORD_OVERHEAD = 400


def record_size(key: str, record: IdempotencyRecord) -> int:
    """About how many bytes `record` holds in memory."""
    response = record.response
    headers = sum(len(name) + len(value) for name, value in response.headers)
    return len(key) + len(response.body) + headers + _RECORD_OVERHEAD


@dataclass(slots=True)
class _Lock:
    token: str
    fingerprint: str
    until: float
    #: A claim was told IN_FLIGHT with our token: someone may wait for us.
    revealed: bool = False


@dataclass(frozen=True, slots=True)
class _Result:
    response: StoredResponse | None
    until: float


class MemoryIdempotency(MemoryState):
    def __init__(self) -> None:
        super().__init__()
        self._locks: dict[str, _Lock] = {}
        self._records: dict[str, IdempotencyRecord] = {}
        self._record_bytes = 0
        self._results: dict[tuple[str, str], _Result] = {}
        self._waiters: dict[tuple[str, str], set[asyncio.Event]] = {}
        self._sweep_above = SWEEP_FLOOR

    def load_record(self, key: str, record: IdempotencyRecord) -> None:
        """Put a replay record back, unless it expired."""
        if record.keep_until > self._clock.now():
            self._keep_record(key, record)

    async def idem_claim(self, key: str, fingerprint: str, token: str, lock_ttl: float) -> Claim:
        now = self._clock.now()
        record = self._records.get(key)
        if record is not None:
            if record.keep_until > now:
                if record.fingerprint != fingerprint:
                    return Claim(ClaimOutcome.MISMATCH)
                return Claim(ClaimOutcome.COMPLETED, record=record.response)
            self._forget_record(key)
        lock = self._locks.get(key)
        if lock is not None and lock.until > now:
            if lock.fingerprint != fingerprint:
                return Claim(ClaimOutcome.MISMATCH)
            lock.revealed = True
            return Claim(ClaimOutcome.IN_FLIGHT, token=lock.token)
        self._locks[key] = _Lock(token, fingerprint, now + lock_ttl)
        self._maybe_sweep(now)
        return Claim(ClaimOutcome.ACQUIRED, token=token)

    async def idem_renew(self, key: str, token: str, lock_ttl: float) -> bool:
        now = self._clock.now()
        lock = self._locks.get(key)
        if lock is None or lock.token != token or lock.until <= now:
            return False
        lock.until = now + lock_ttl
        return True

    async def idem_finish(
        self,
        key: str,
        token: str,
        response: StoredResponse | None,
        keep_until: float | None,
    ) -> None:
        now = self._clock.now()
        lock = self._locks.get(key)
        ours = lock is not None and lock.token == token
        # A lock that is no longer ours may have been revealed before it lapsed.
        if not ours or (lock is not None and lock.revealed):
            self._results[(key, token)] = _Result(response, now + RESULT_TTL)
        if lock is not None and ours:
            del self._locks[key]
            if response is not None and keep_until is not None and keep_until > now:
                record = IdempotencyRecord(lock.fingerprint, response, keep_until)
                self._keep_record(key, record)
                if self._observer is not None:
                    self._observer.record_kept(key, record)
        for event in self._waiters.get((key, token), ()):
            event.set()
        self._maybe_sweep(now)

    async def idem_wait(self, key: str, token: str, timeout: float) -> WaitResult:
        # Real time, not the injected clock: a fake clock's sleep returns at once.
        deadline = time.monotonic() + timeout
        event = asyncio.Event()
        waiters = self._waiters.setdefault((key, token), set())
        waiters.add(event)
        try:
            while True:
                verdict = self._wait_verdict(key, token)
                if verdict is not None:
                    return verdict
                left = deadline - time.monotonic()
                if left <= 0:
                    return WaitResult(WaitOutcome.LOST)
                try:
                    async with asyncio.timeout(min(left, EXPIRY_CHECK)):
                        await event.wait()
                except TimeoutError:
                    pass
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop((key, token), None)

    def _wait_verdict(self, key: str, token: str) -> WaitResult | None:
        """The wait's answer as things stand, or None while the holder is alive."""
        now = self._clock.now()
        result = self._results.get((key, token))
        if result is not None and result.until > now:
            if result.response is None:
                return WaitResult(WaitOutcome.UNSHARED)
            return WaitResult(WaitOutcome.SHARED, result.response)
        lock = self._locks.get(key)
        if lock is None or lock.token != token or lock.until <= now:
            return WaitResult(WaitOutcome.LOST)
        return None

    def _maybe_sweep(self, now: float) -> None:
        """Forget expired locks, records and results once the maps have doubled."""
        if len(self._locks) + len(self._records) + len(self._results) <= self._sweep_above:
            return
        self._locks = {k: v for k, v in self._locks.items() if v.until > now}
        self._records = {k: v for k, v in self._records.items() if v.keep_until > now}
        self._record_bytes = sum(record_size(k, v) for k, v in self._records.items())
        self._results = {k: v for k, v in self._results.items() if v.until > now}
        alive = len(self._locks) + len(self._records) + len(self._results)
        self._sweep_above = max(SWEEP_FLOOR, 2 * alive)

    def _keep_record(self, key: str, record: IdempotencyRecord) -> None:
        """Keep `record` as the newest; forget the oldest past REPLAY_MAX_BYTES."""
        self._forget_record(key)
        self._records[key] = record
        self._record_bytes += record_size(key, record)
        while self._record_bytes > REPLAY_MAX_BYTES and self._records:
            self._forget_record(next(iter(self._records)))

    def _forget_record(self, key: str) -> None:
        record = self._records.pop(key, None)
        if record is not None:
            self._record_bytes -= record_size(key, record)
