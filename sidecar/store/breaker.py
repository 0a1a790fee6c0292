"""The circuit breaker capability: one state machine per upstream host (SPEC §2.6)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


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


class BreakerStore(Protocol):
    """On the request path; falls back to local state when Redis is lost."""

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
