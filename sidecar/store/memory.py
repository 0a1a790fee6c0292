"""The store in this process's memory: the hot path of the embedded store, and
the local fallback of the Redis one (SPEC §7).

Plain dicts on one event loop, so every method is atomic without a lock.
Expired entries are purged lazily: when read, when the LRU pushes them out,
or by an occasional sweep of the idempotency maps.

- Smart cache: an LRU bounded by the total `StoredResponse.size` of its
  entries. An entry bigger than the whole bound is not stored (and a bound of
  0 stores nothing); a put always drops the key's older entry, which the new
  answer supersedes.
- Breakers: the state machine of `base.Admission` and `Store.breaker_record`;
  a host that succeeds is forgotten (closed is the default).
- Idempotency: one lock per key, the explicit keys' records until
  `keep_until`, and each finished holder's response for its waiters for
  `RESULT_TTL` seconds. A response is kept for waiters only when a claim was
  told IN_FLIGHT with that token (nobody else can know it), so an
  uncontended request keeps nothing. Waiters sleep on an event set by
  `idem_finish`, and look at the clock every `EXPIRY_CHECK` seconds of real
  time to notice a holder whose lock ran out.
- Named records (routes, client keys, secrets): a dict per kind and a
  version counter per kind bumped by every write (only this process sees
  them: the memory-only store is for tests and the Redis store's fallback,
  which never holds records).
- Jobs: a dict of `Job`s (owner and due_at inside), scanned for the claim
  (memory-only stores hold few jobs: tests and `EmbeddedStore(None)`; the
  Redis store's fallback never holds jobs), and the webhook secret.
- Observability: events in a deque bounded at EVENTS_MAX, numbered from 1
  (the number is the cursor, so the events after a cursor start at a known
  index); request records in an insertion-ordered dict bounded at
  REQUESTS_MAX (a replaced record moves to the newest end); stats as a dict
  of hour buckets, the ones past STATS_KEEP_HOURS dropped when a new bucket
  is opened. Rate limit buckets (`base.take_token`) are what the embedded
  store uses on the request path, and the Redis store's fallback: a bucket
  that has refilled is the same as none, so the full ones are swept once
  the map has doubled.

A `StoreObserver` is told of every change worth keeping past a restart; the
`load_*` methods put such state back at start without telling it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sidecar.clock import Clock
from sidecar.store.base import (
    EVENTS_MAX,
    RECORD_KINDS,
    REQUESTS_MAX,
    STATS_KEEP_HOURS,
    Admission,
    BreakerState,
    BreakerStatus,
    Claim,
    ClaimOutcome,
    RateDecision,
    StoredResponse,
    StoreHealth,
    WaitOutcome,
    WaitResult,
    check_counts,
    check_rate,
    parse_seq_cursor,
    stats_window,
    take_token,
)

#: How long a finished holder's response waits for its waiters (clock seconds).
RESULT_TTL = 60.0
#: How often (real seconds) a waiter checks the clock for the holder's expiry.
EXPIRY_CHECK = 0.03
#: The idempotency maps are swept once they hold this many entries (then twice
#: what survived the last sweep), so sweeping costs O(1) per call amortised.
SWEEP_FLOOR = 1024

if TYPE_CHECKING:
    from sidecar.jobs.model import Job

_ALLOWED = Admission(allowed=True)
_CLEAN = Admission(allowed=True, clean=True)
_HEALTHY = StoreHealth("memory")


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """An explicit key's finished response, replayed until `keep_until`."""

    fingerprint: str
    response: StoredResponse
    keep_until: float


class StoreObserver(Protocol):
    """Told, synchronously, of each change worth keeping past a restart."""

    def cache_stored(self, key: str, entry: StoredResponse) -> None:
        """`entry` is now the cache entry of `key`."""

    def cache_dropped(self, key: str) -> None:
        """`key` left the cache (evicted, expired or superseded)."""

    def record_kept(self, key: str, record: IdempotencyRecord) -> None:
        """`record` is now the replay record of `key`."""

    def breaker_saved(self, host: str, status: BreakerStatus | None) -> None:
        """The breaker of `host` is now `status`; None when forgotten (closed)."""


@dataclass(slots=True)
class _Breaker:
    state: BreakerState
    failures: int = 0
    opened_at: float = 0.0
    probe_until: float = 0.0

    def status(self, changed: bool = False) -> BreakerStatus:
        return BreakerStatus(self.state, self.failures, self.opened_at, changed)


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


@dataclass(frozen=True, slots=True)
class _Bucket:
    """A rate limit bucket: `tokens` as of `updated_at`, full again at `full_at`."""

    tokens: float
    updated_at: float
    full_at: float


class MemoryStore:
    """A complete `Store` in memory; nothing survives the process."""

    def __init__(
        self,
        clock: Clock,
        cache_max_bytes: int = 64 * 1024**2,
        observer: StoreObserver | None = None,
    ) -> None:
        self._clock = clock
        self._cache_max_bytes = cache_max_bytes
        self._observer = observer
        # key -> (entry, its size); least recently used first.
        self._cache: OrderedDict[str, tuple[StoredResponse, int]] = OrderedDict()
        self._cache_bytes = 0
        self._breakers: dict[str, _Breaker] = {}
        self._locks: dict[str, _Lock] = {}
        self._records: dict[str, IdempotencyRecord] = {}
        self._results: dict[tuple[str, str], _Result] = {}
        self._waiters: dict[tuple[str, str], set[asyncio.Event]] = {}
        self._sweep_above = SWEEP_FLOOR
        self._named: dict[str, dict[str, bytes]] = {kind: {} for kind in RECORD_KINDS}
        self._record_versions: dict[str, int] = dict.fromkeys(RECORD_KINDS, 0)
        self._jobs: dict[str, Job] = {}
        self._webhook_secret: str | None = None
        # (number, data); numbers are consecutive, so a cursor maps to an index.
        self._events: deque[tuple[int, bytes]] = deque(maxlen=EVENTS_MAX)
        self._events_written = 0
        # request id -> record; the newest last.
        self._requests: OrderedDict[str, bytes] = OrderedDict()
        self._stats: dict[int, dict[str, int]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._buckets_sweep_above = SWEEP_FLOOR

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def health(self) -> StoreHealth:
        return _HEALTHY

    # -- restoring state (the embedded store, at open) -----------------------

    def load_cache(self, key: str, entry: StoredResponse) -> None:
        """Put `entry` back as the most recently used, unless it expired."""
        self._put(key, entry, notify=False)

    def load_record(self, key: str, record: IdempotencyRecord) -> None:
        """Put a replay record back, unless it expired."""
        if record.keep_until > self._clock.now():
            self._records[key] = record

    def load_breaker(self, host: str, status: BreakerStatus) -> None:
        """Put a breaker back; a half-open one will admit a new probe."""
        if status.state is not BreakerState.CLOSED or status.failures:
            self._breakers[host] = _Breaker(status.state, status.failures, status.opened_at)

    # -- smart cache ---------------------------------------------------------

    async def cache_get(self, key: str) -> StoredResponse | None:
        slot = self._cache.get(key)
        if slot is None:
            return None
        if slot[0].expires_at <= self._clock.now():
            self._drop(key)
            return None
        self._cache.move_to_end(key)
        return slot[0]

    async def cache_put(self, key: str, entry: StoredResponse) -> None:
        self._put(key, entry, notify=True)

    def _put(self, key: str, entry: StoredResponse, notify: bool) -> None:
        superseded = key in self._cache
        if superseded:
            self._cache_bytes -= self._cache.pop(key)[1]
        size = entry.size
        if size > self._cache_max_bytes or entry.expires_at <= self._clock.now():
            if superseded and self._observer is not None:
                self._observer.cache_dropped(key)
            return
        while self._cache_bytes + size > self._cache_max_bytes:
            oldest = next(iter(self._cache))
            self._drop(oldest)
        self._cache[key] = (entry, size)
        self._cache_bytes += size
        if notify and self._observer is not None:
            self._observer.cache_stored(key, entry)

    def _drop(self, key: str) -> None:
        self._cache_bytes -= self._cache.pop(key)[1]
        if self._observer is not None:
            self._observer.cache_dropped(key)

    # -- circuit breaker -----------------------------------------------------

    async def breaker_admit(self, host: str, cooldown: float, probe_lease: float) -> Admission:
        breaker = self._breakers.get(host)
        if breaker is None:
            return _CLEAN
        if breaker.state is BreakerState.CLOSED:
            return _ALLOWED
        now = self._clock.now()
        if breaker.state is BreakerState.OPEN:
            reopen = breaker.opened_at + cooldown
            if now < reopen:
                return Admission(allowed=False, retry_after=reopen - now)
        elif breaker.probe_until > now:
            return Admission(allowed=False, retry_after=breaker.probe_until - now)
        # Not saved: a probe's lease means nothing to the next process.
        breaker.state = BreakerState.HALF_OPEN
        breaker.probe_until = now + probe_lease
        return Admission(allowed=True, probe=True)

    async def breaker_record(self, host: str, success: bool, threshold: int) -> BreakerStatus:
        if success:
            gone = self._breakers.pop(host, None)
            if gone is not None and self._observer is not None:
                self._observer.breaker_saved(host, None)
            changed = gone is not None and gone.state is not BreakerState.CLOSED
            return BreakerStatus(BreakerState.CLOSED, changed=changed)
        breaker = self._breakers.setdefault(host, _Breaker(BreakerState.CLOSED))
        breaker.failures += 1
        opens = breaker.state is BreakerState.HALF_OPEN or (
            breaker.state is BreakerState.CLOSED and breaker.failures >= threshold
        )
        if opens:
            breaker.state = BreakerState.OPEN
            breaker.opened_at = self._clock.now()
        status = breaker.status(changed=opens)
        if self._observer is not None:
            self._observer.breaker_saved(host, status)
        return status

    async def breaker_status(self, host: str) -> BreakerStatus:
        breaker = self._breakers.get(host)
        return BreakerStatus(BreakerState.CLOSED) if breaker is None else breaker.status()

    # -- idempotency ---------------------------------------------------------

    async def idem_claim(self, key: str, fingerprint: str, token: str, lock_ttl: float) -> Claim:
        now = self._clock.now()
        record = self._records.get(key)
        if record is not None:
            if record.keep_until > now:
                if record.fingerprint != fingerprint:
                    return Claim(ClaimOutcome.MISMATCH)
                return Claim(ClaimOutcome.COMPLETED, record=record.response)
            del self._records[key]
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
                self._records[key] = record
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
        self._results = {k: v for k, v in self._results.items() if v.until > now}
        alive = len(self._locks) + len(self._records) + len(self._results)
        self._sweep_above = max(SWEEP_FLOOR, 2 * alive)

    # -- named records -----------------------------------------------------------

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

    # -- jobs ------------------------------------------------------------------

    async def job_add(self, job: Job) -> None:
        self._jobs[job.id] = job.with_(owner=None)

    async def job_claim(self, owner: str, lease: float) -> Job | None:
        now = self._clock.now()
        due = [job for job in self._jobs.values() if job.due_at is not None and job.due_at <= now]
        if not due:
            return None
        # The same order as the other backends: earliest due, then id.
        first = min(due, key=lambda job: (job.due_at, job.id))
        claimed = first.with_(due_at=now + lease, owner=owner)
        self._jobs[claimed.id] = claimed
        return claimed

    async def job_renew(self, job_id: str, owner: str, lease: float) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            return False
        self._jobs[job_id] = job.with_(due_at=self._clock.now() + lease)
        return True

    async def job_save(self, job: Job, owner: str | None) -> bool:
        if owner is not None:
            stored = self._jobs.get(job.id)
            if stored is None or stored.owner != owner:
                return False
        self._jobs[job.id] = job.with_(owner=None)
        return True

    async def job_get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def job_list(self, status: str | None = None, limit: int = 100) -> list[Job]:
        jobs = [job for job in self._jobs.values() if status is None or job.status == status]
        jobs.sort(key=lambda job: (job.created_at, job.id), reverse=True)
        return jobs[: max(0, limit)]

    async def job_depth(self) -> int:
        return sum(1 for job in self._jobs.values() if job.phase != "done")

    async def job_purge(self, finished_before: float) -> int:
        gone = [job.id for job in self._jobs.values() if _purgeable(job, finished_before)]
        for job_id in gone:
            del self._jobs[job_id]
        return len(gone)

    async def webhook_secret(self, new: str) -> str:
        if self._webhook_secret is None:
            self._webhook_secret = new
        return self._webhook_secret

    # -- observability -----------------------------------------------------------

    async def events_add(self, items: Sequence[bytes]) -> None:
        for data in items:
            self._events_written += 1
            self._events.append((self._events_written, bytes(data)))

    async def events_read(self, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        if after is None:
            start = max(0, len(self._events) - limit)
        else:
            first = self._events[0][0] if self._events else self._events_written + 1
            start = max(0, parse_seq_cursor(after) - first + 1)
        if limit <= 0:
            return []
        chosen = itertools.islice(self._events, start, start + limit)
        return [(str(number), data) for number, data in chosen]

    async def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None:
        for request_id, data in items:
            self._requests.pop(request_id, None)
            self._requests[request_id] = bytes(data)
        while len(self._requests) > REQUESTS_MAX:
            self._requests.popitem(last=False)

    async def request_get(self, request_id: str) -> bytes | None:
        return self._requests.get(request_id)

    async def stats_add(self, hour: int, counts: Mapping[str, int]) -> None:
        kept = check_counts(counts)
        if not kept:
            return
        bucket = self._stats.get(hour)
        if bucket is None:
            bucket = self._stats[hour] = {}
            oldest = int(self._clock.now() // 3600) - STATS_KEEP_HOURS
            for old in [h for h in self._stats if h < oldest]:
                del self._stats[old]
        for name, value in kept.items():
            bucket[name] = bucket.get(name, 0) + value

    async def stats_read(self, since_hour: int) -> dict[str, int]:
        first, last = stats_window(since_hour, self._clock.now())
        totals: dict[str, int] = {}
        for hour, bucket in self._stats.items():
            if first <= hour <= last:
                for name, value in bucket.items():
                    totals[name] = totals.get(name, 0) + value
        return totals

    async def rate_take(self, key: str, limit: int, period: float) -> RateDecision:
        check_rate(limit, period)
        now = self._clock.now()
        bucket = self._buckets.get(key)
        allowed, tokens = take_token(
            None if bucket is None else bucket.tokens,
            0.0 if bucket is None else bucket.updated_at,
            now,
            limit,
            period,
        )
        decision = RateDecision.judge(allowed, tokens, limit, period)
        self._buckets[key] = _Bucket(tokens, now, now + decision.reset)
        if len(self._buckets) > self._buckets_sweep_above:
            self._buckets = {k: b for k, b in self._buckets.items() if b.full_at > now}
            self._buckets_sweep_above = max(SWEEP_FLOOR, 2 * len(self._buckets))
        return decision


def _purgeable(job: Job, finished_before: float) -> bool:
    """Nothing left to do, and finished before the time (never without a finish time)."""
    return job.phase == "done" and job.finished_at is not None and job.finished_at < finished_before
