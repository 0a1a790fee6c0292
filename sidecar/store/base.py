"""The store interface: the state the sidecar shares across requests and sidecars.

Two backends implement it (SPEC §7): `embedded` (memory for the hot path,
SQLite in the data dir for what must survive a restart) and `redis` (one
state for many sidecars). `resilient` wraps Redis with an embedded fallback
so that losing Redis never fails a proxied request. Every backend passes the
one contract suite in `tests/sidecar/store/`.

Time is injected: a backend is built with a `Clock` and reads wall-clock
seconds from `clock.now()` for every expiry, so tests move a fake clock
instead of sleeping, on both backends alike (Redis scripts get `now` as an
argument). Backends may also set a server-side expiry a little past the
logical one, for garbage collection.

A backend raises `StoreUnavailable` (sidecar.errors) when it cannot answer;
it never lets a redis or sqlite exception escape.

Observability (SPEC §8) adds three bounded logs and a rate limiter: events
(an append-only log read by cursor), request records (for replay, by request
id) and hourly stats counters. Their writes come from background flushers in
batches, never from the request path, so a backend may spend a transaction or
a script on each call; the rate limiter (`rate_take`) is on the request path
and is one memory operation or one Redis script. `take_token` and
`RateDecision.judge` are the token bucket's arithmetic, shared by the memory
backend and (mirrored step for step in Lua) the Redis one, so both decide
alike to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import orjson

if TYPE_CHECKING:
    from sidecar.jobs.model import Job

Headers = tuple[tuple[str, str], ...]

#: The kinds of named record the store keeps (`records_*`): each its own
#: namespace with its own version.
RECORD_KINDS = ("routes", "keys", "secrets")

#: Events kept in the log (`events_add`); the oldest are dropped past it.
EVENTS_MAX = 10_000
#: Request records kept for replay (`requests_put`); the oldest are dropped past it.
REQUESTS_MAX = 1_000
#: Hour buckets of stats older than this (before the store's current hour)
#: may be dropped, and are never read.
STATS_KEEP_HOURS = 24 * 90
#: Slack in token counts, so that float rounding in a refill (49 s at 1/49
#: token a second gives 0.9999999999999999) never refuses a token that is due.
RATE_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A whole response kept for a cache rescue or an idempotent replay."""

    status: int
    headers: Headers
    body: bytes
    #: Wall-clock seconds when the upstream answered (for the Age header).
    stored_at: float
    #: Wall-clock seconds after which the entry no longer exists.
    expires_at: float

    def encode(self) -> bytes:
        """Compact bytes: a JSON head line, then the raw body."""
        head = orjson.dumps(
            {"s": self.status, "h": self.headers, "t": self.stored_at, "x": self.expires_at}
        )
        return head + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> StoredResponse:
        """The inverse of `encode` (orjson never writes a raw newline)."""
        head, _, body = data.partition(b"\n")
        meta = orjson.loads(head)
        headers = tuple((str(name), str(value)) for name, value in meta["h"])
        return cls(meta["s"], headers, body, meta["t"], meta["x"])

    @property
    def size(self) -> int:
        """Bytes this entry costs, for the cache's memory bound."""
        return len(self.body) + sum(len(n) + len(v) for n, v in self.headers) + 64


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether one attempt to a host may go ahead (SPEC §2.6 circuit breaker).

    Rules, per host:
      closed                                   -> allowed
      open, now < opened_at + cooldown         -> refused, retry_after = the rest
      open, cooldown over                      -> half_open; allowed as the probe
      half_open, probe_until > now             -> refused (one probe in flight)
      half_open, probe lease ran out           -> allowed as a new probe
    """

    allowed: bool
    probe: bool = False
    #: Seconds until the breaker may let an attempt through (when refused).
    retry_after: float = 0.0
    #: Closed with no failure counted: a success need not be recorded (one
    #: store round trip fewer per healthy request; a failure counted by
    #: another sidecar in between is then reset by the next success instead).
    clean: bool = False


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """A host's breaker as it stands, with whether the last call changed it."""

    state: BreakerState
    failures: int = 0
    opened_at: float = 0.0
    #: True when this call moved the breaker to `state` (for events, later).
    changed: bool = False


class ClaimOutcome(StrEnum):
    #: The key was free: the caller holds the lock and must `finish` it.
    ACQUIRED = "acquired"
    #: Another request holds the key: wait on `token`, or answer 409.
    IN_FLIGHT = "in_flight"
    #: An explicit key's response is kept: replay `record`.
    COMPLETED = "completed"
    #: The key is held or kept for another method, target or body: 422.
    MISMATCH = "mismatch"


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    #: The holder's token: ours when ACQUIRED, the other's when IN_FLIGHT.
    token: str = ""
    record: StoredResponse | None = None


class WaitOutcome(StrEnum):
    #: The holder finished and shared its response: `response` is it.
    SHARED = "shared"
    #: The holder finished without a response to share (a body too big to
    #: keep, say): make the call yourself.
    UNSHARED = "unshared"
    #: The holder's lock expired without a finish (it died): claim again.
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class WaitResult:
    outcome: WaitOutcome
    response: StoredResponse | None = None


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What /_mirapi/readyz reports about the store."""

    backend: str
    ok: bool = True
    #: Why the store is degraded, safe to show (never a URL with a password).
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The verdict of one `rate_take`: what a 429 and the RateLimit-* headers need."""

    allowed: bool
    #: Whole tokens left after this take (RateLimit-Remaining).
    remaining: int
    #: Seconds until the bucket is full again (RateLimit-Reset).
    reset: float
    #: Seconds until one token is available (Retry-After); 0 when allowed.
    retry_after: float = 0.0

    @classmethod
    def judge(cls, allowed: bool, tokens: float, limit: int, period: float) -> RateDecision:
        """The decision for a bucket left holding `tokens` (after the take, when allowed)."""
        rate = limit / period
        remaining = min(limit, max(0, math.floor(tokens + RATE_EPSILON)))
        reset = max(0.0, (limit - tokens) / rate)
        retry_after = 0.0 if allowed else max(0.0, (1.0 - tokens) / rate)
        return cls(allowed, remaining, reset, retry_after)


def check_rate(limit: int, period: float) -> None:
    """ValueError unless `limit` >= 1 token per a positive, finite `period`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError("a rate limit must allow at least 1 request per period")
    if not (math.isfinite(period) and period > 0):
        raise ValueError("a rate limit period must be a positive number of seconds")


def take_token(
    tokens: float | None, updated_at: float, now: float, limit: int, period: float
) -> tuple[bool, float]:
    """One token bucket step: refill since `updated_at`, then take a token if there is one.

    `tokens` None is a bucket never seen (full). Returns (allowed, tokens
    left). A clock behind `updated_at` (another sidecar's, a little skewed)
    refills nothing rather than draining. The Redis script `RATE_TAKE` does
    the same operations in the same order.
    """
    if tokens is None:
        level = float(limit)
    else:
        elapsed = max(0.0, now - updated_at)
        level = min(float(limit), tokens + elapsed * (limit / period))
    if level >= 1.0 - RATE_EPSILON:
        return True, max(0.0, level - 1.0)
    return False, level


def check_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """The non-zero counters of `counts`; ValueError for a negative or non-integer one."""
    kept: dict[str, int] = {}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            # The counter's name is ours (a kind of rescue, a currency): safe to show.
            raise ValueError(f"stats counter {name!r} must be a whole number >= 0")
        if value:
            kept[name] = value
    return kept


def stats_window(since_hour: int, now: float) -> tuple[int, int]:
    """The hour buckets a `stats_read(since_hour)` sums, first and last inclusive.

    From `since_hour`, but no earlier than STATS_KEEP_HOURS before the
    current hour, up to the next hour (a sidecar whose clock is a little
    ahead may already count in it).
    """
    current = int(now // 3600)
    return max(since_hour, current - STATS_KEEP_HOURS), current + 1


def parse_seq_cursor(after: str) -> int:
    """An event cursor of the memory and embedded stores (a row number) as an int."""
    if not after.isascii() or not after.isdigit():
        raise ValueError("not an event cursor of this store")
    return int(after)


class Store(Protocol):
    """Shared state: cache, breakers, idempotency keys, records, jobs, observability."""

    async def open(self) -> None:
        """Connect, create tables, load what survives a restart."""

    async def close(self) -> None:
        """Flush pending writes and release connections."""

    def health(self) -> StoreHealth:
        """The store's state as last seen; never blocks."""

    # -- smart cache ------------------------------------------------------

    async def cache_get(self, key: str) -> StoredResponse | None:
        """The entry under `key` unless it expired by `now`."""

    async def cache_put(self, key: str, entry: StoredResponse) -> None:
        """Keep `entry` until `entry.expires_at`; may evict others to stay bounded."""

    # -- circuit breaker ---------------------------------------------------

    async def breaker_admit(self, host: str, cooldown: float, probe_lease: float) -> Admission:
        """Atomically decide whether one attempt to `host` may go (see Admission)."""

    async def breaker_record(self, host: str, success: bool, threshold: int) -> BreakerStatus:
        """Atomically record an attempt's outcome.

        success -> closed, failures 0 (from any state);
        failure -> failures + 1; half_open -> open (opened_at = now);
                   closed and failures >= threshold -> open (opened_at = now);
                   open stays open (the cooldown is not extended).
        """

    async def breaker_status(self, host: str) -> BreakerStatus:
        """The breaker of `host` (closed when never seen)."""

    # -- idempotency ---------------------------------------------------------

    async def idem_claim(self, key: str, fingerprint: str, token: str, lock_ttl: float) -> Claim:
        """Atomically: the kept record, else the live lock, else take the lock.

        `fingerprint` identifies method, target and body: a kept record or a
        live lock with another fingerprint gives MISMATCH.
        """

    async def idem_renew(self, key: str, token: str, lock_ttl: float) -> bool:
        """Extend our lock; False when it is no longer ours (it expired: stop)."""

    async def idem_finish(
        self,
        key: str,
        token: str,
        response: StoredResponse | None,
        keep_until: float | None,
    ) -> None:
        """Release our lock and hand `response` to the waiters of `token`.

        With `keep_until` (explicit keys only) the response is also kept as
        the key's record for replay. `response=None` tells waiters to make
        their own call. A no-op for the lock when it is no longer ours.
        """

    async def idem_wait(self, key: str, token: str, timeout: float) -> WaitResult:
        """Wait until the holder `token` finishes or its lock is gone.

        Polls or listens in real time; the lock's expiry is judged by the
        clock. Gives up with LOST after `timeout` seconds of real time.
        """

    # -- named records: routes, client keys, secrets ---------------------------
    # Durable: a write returns only once it is committed (SQLite) or
    # acknowledged (Redis); StoreUnavailable otherwise. Records are written by
    # commands (`mirapi routes`, `keys`, `secrets`), not on the request path;
    # sidecars read them through a RecordTable that polls `records_version`.
    # `kind` is one of RECORD_KINDS; each kind has its own names and version.

    async def records_load(self, kind: str) -> tuple[int, dict[str, bytes]]:
        """Every record of `kind` (name -> data) and the version they are at."""

    async def records_version(self, kind: str) -> int:
        """A number that changes whenever a record of `kind` is written or removed."""

    async def record_put(self, kind: str, name: str, data: bytes, replace: bool) -> bool:
        """Store record `name`; False (nothing written) if it exists and not `replace`."""

    async def record_delete(self, kind: str, name: str) -> bool:
        """Remove record `name`; False when there was none."""

    # -- jobs (SPEC §5) ---------------------------------------------------------
    # Durable: `job_add`, `job_save` and the webhook secret return only once
    # committed (SQLite) or acknowledged (Redis), else StoreUnavailable. A
    # claim is a lease: it moves the job's `due_at` to now + lease and sets
    # `owner`, so a worker that dies lets the job come due again by itself.

    async def job_add(self, job: Job) -> None:
        """Store a new job (encoded with `sidecar.jobs.model.encode_job`)."""

    async def job_claim(self, owner: str, lease: float) -> Job | None:
        """Atomically take the job due earliest (due_at <= now), leased to `owner`."""

    async def job_renew(self, job_id: str, owner: str, lease: float) -> bool:
        """Push our lease to now + lease; False when the job is no longer ours."""

    async def job_save(self, job: Job, owner: str | None) -> bool:
        """Write `job` whole (its `due_at` is the next time it is due, None: never).

        With `owner`, only while that worker still holds the lease (False
        otherwise, nothing written); with None, unconditionally (the CLI's
        cancel and retry). The saved job has no owner.
        """

    async def job_get(self, job_id: str) -> Job | None:
        """The job, or None."""

    async def job_list(self, status: str | None = None, limit: int = 100) -> list[Job]:
        """Jobs, newest first, optionally of one status."""

    async def job_depth(self) -> int:
        """How many jobs still have work to do (run or deliver)."""

    async def job_purge(self, finished_before: float) -> int:
        """Remove jobs with nothing left to do that finished before the time; the count."""

    async def webhook_secret(self, new: str) -> str:
        """The install's signing secret: the stored one, else store `new` and return it."""

    # -- observability (SPEC §8): events, request records, stats, rate limits ----
    # Values are opaque bytes (the caller's encoding; never decoded here).
    # The writes are called by background flushers with batches, not by
    # requests: embedded commits each call as its own transaction (not
    # fsynced: a power cut may lose the last second), Redis runs one script
    # or pipeline per call. They raise StoreUnavailable when the store cannot
    # take them (the ResilientStore never does: while degraded it keeps them
    # locally, best effort). Reads go to the shared state (the SQLite file,
    # Redis), so a command in another process sees every sidecar's writes.

    async def events_add(self, items: Sequence[bytes]) -> None:
        """Append events in order; the log keeps the newest EVENTS_MAX."""

    async def events_read(self, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        """Events as (cursor, data), oldest first, at most `limit` (none when `limit` <= 0).

        after=None: the newest `limit` events. Else the events written after
        the one whose cursor is `after`, the oldest of them first (to follow
        the log, pass back the last cursor read). A cursor is an opaque str,
        strictly increasing in write order, shared by every sidecar on one
        Redis (embedded and memory: the row number as text; Redis: the
        stream entry id); compare cursors only by passing them back. A
        cursor whose event was trimmed still works: the read starts at the
        oldest event kept. ValueError when `after` is not this backend's
        kind of cursor.
        """

    async def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store request records by request id, in order; a record replaces the one
        with the same id (and becomes the newest). The newest REQUESTS_MAX are kept."""

    async def request_get(self, request_id: str) -> bytes | None:
        """The request record of `request_id`, or None (never stored, or trimmed)."""

    async def stats_add(self, hour: int, counts: Mapping[str, int]) -> None:
        """Add `counts` to the counters of the hour bucket `hour` (unix seconds // 3600).

        Counter names are opaque strings ("requests", "rescued:retry",
        "capital:usd"); values are whole numbers >= 0 (ValueError otherwise);
        a zero adds nothing, and a counter never added is absent from reads.
        Buckets older than STATS_KEEP_HOURS before the store's current hour
        may be dropped.
        """

    async def stats_read(self, since_hour: int) -> dict[str, int]:
        """Every counter summed over the hour buckets from `since_hour` on (inclusive).

        Only the buckets of `stats_window(since_hour, now)` are read: none
        older than STATS_KEEP_HOURS, none past the store's next hour.
        """

    async def rate_take(self, key: str, limit: int, period: float) -> RateDecision:
        """Take one token from the bucket `key`, if it holds one (see RateDecision).

        A token bucket of capacity `limit`, refilled at limit/period tokens a
        second, judged by the store's clock; a bucket never seen is full.
        The same `key` with another `limit` keeps its tokens (capped at the
        new capacity). Embedded: this process's memory (one sidecar per data
        dir); Redis: shared by every sidecar on the server. ValueError unless
        `limit` >= 1 and `period` > 0.
        """
