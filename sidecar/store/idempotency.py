"""The idempotency capability: one lock per key, waiters, replay records (SPEC §2.4)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sidecar.store.cache import StoredResponse


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


class IdempotencyStore(Protocol):
    """On the request path; falls back to local state when Redis is lost (a key
    stays where its lock was taken)."""

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
