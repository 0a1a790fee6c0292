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
"""

from __future__ import annotations

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


class Store(Protocol):
    """Shared state: cache, breakers, idempotency keys, routes, jobs."""

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
