"""The memory store's breakers: the state machine of `breaker.Admission` and
`BreakerStore.breaker_record`; a host that succeeds is forgotten (closed is
the default)."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.store.breaker import Admission, BreakerState, BreakerStatus
from sidecar.store.memory.state import MemoryState

#: Breakers kept at once. A host is at most 253 characters, so this bounds
#: the map by bytes too (~2 MB): a stream of distinct failing hosts cannot
#: grow it; past it the oldest closed breaker (failures counted, not open)
#: is forgotten first, else the oldest of all.
MAX_BREAKERS = 4096

_ALLOWED = Admission(allowed=True)
_CLEAN = Admission(allowed=True, clean=True)


@dataclass(slots=True)
class _Breaker:
    state: BreakerState
    failures: int = 0
    opened_at: float = 0.0
    probe_until: float = 0.0

    def status(self, changed: bool = False) -> BreakerStatus:
        return BreakerStatus(self.state, self.failures, self.opened_at, changed)


class MemoryBreakers(MemoryState):
    def __init__(self) -> None:
        super().__init__()
        self._breakers: dict[str, _Breaker] = {}

    def load_breaker(self, host: str, status: BreakerStatus) -> None:
        """Put a breaker back; a half-open one will admit a new probe."""
        if status.state is not BreakerState.CLOSED or status.failures:
            self._breakers[host] = _Breaker(status.state, status.failures, status.opened_at)

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
        breaker = self._breakers.get(host)
        if breaker is None:
            self._make_room()
            breaker = self._breakers[host] = _Breaker(BreakerState.CLOSED)
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

    def _make_room(self) -> None:
        """Forget one breaker when the map is full (see MAX_BREAKERS)."""
        if len(self._breakers) < MAX_BREAKERS:
            return
        victim = next(
            (host for host, b in self._breakers.items() if b.state is BreakerState.CLOSED),
            next(iter(self._breakers)),
        )
        del self._breakers[victim]
        if self._observer is not None:
            self._observer.breaker_saved(victim, None)

    async def breaker_status(self, host: str) -> BreakerStatus:
        breaker = self._breakers.get(host)
        return BreakerStatus(BreakerState.CLOSED) if breaker is None else breaker.status()
