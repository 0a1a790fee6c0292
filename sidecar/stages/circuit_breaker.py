"""The circuit breaker, per upstream host (SPEC §2.6, `X-Circuit-Breaker`).

State machine, kept in the store so that sidecars sharing Redis share it
(`BreakerStore.breaker_admit` / `breaker_record` make each step atomic):

    closed ──(threshold consecutive failures)──▶ open
    open ──(cooldown over; one attempt admitted as the probe)──▶ half_open
    half_open ──(probe succeeds)──▶ closed
    half_open ──(probe fails)──▶ open (the cooldown starts again)

A failure is an attempt that got no response (connection error, reset,
timeout) or a 5xx; every other answer, 4xx and 429 included, shows the host
is up and counts as a success. A refused attempt raises `CircuitOpen`
without any upstream call; the stage sits inside the retry loop, so an
opening circuit also ends the retries. A probe's lease is the attempt's
timeout: a probe whose request died makes way for a new one after it.

The breaker fails open: when the store cannot answer, the attempt goes on
as if the breaker were closed, since the breaker protects the upstream and
must never be the reason a request fails.

Each transition becomes a `breaker` event (with an EventLog), read from
what the store's atomic steps already answer, so the healthy path pays no
extra round trip: an admission as the probe is open->half_open, and
`breaker_record` says when it changed the state. The state it left is
inferred from whether this attempt was the probe (half_open) or not
(closed, for an opening; open, for a closing); an attempt admitted before
another request opened the breaker can make that guess wrong, never the
new state. A new probe after one whose lease ran out shows as
open->half_open again.
"""

from __future__ import annotations

import logging
import math

from sidecar.clock import Clock
from sidecar.errors import CircuitOpen, StoreUnavailable, UpstreamFailure
from sidecar.exchange import CIRCUIT_OPEN_OUTCOME, Exchange, Next, Response
from sidecar.headers import upstream_host
from sidecar.observability.events import BREAKER, Event, EventLog
from sidecar.policy import BreakerPolicy
from sidecar.store.breaker import Admission, BreakerState, BreakerStore

log = logging.getLogger(__name__)


def counts_as_failure(status: int) -> bool:
    """True for an answer that shows the upstream unwell: any 5xx."""
    return status >= 500


class CircuitBreaker:
    """Admits or refuses each attempt by its host's breaker, then records the outcome."""

    def __init__(
        self, store: BreakerStore, clock: Clock, *, events: EventLog | None = None
    ) -> None:
        self._store = store
        # The store reads its own clock for every breaker time; this one
        # dates the events.
        self._clock = clock
        self._events = events

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        breaker = exchange.policy.circuit_breaker
        if breaker is None:
            return await call_next(exchange)
        host = upstream_host(exchange.target)
        admission = await self._admit(exchange, host, breaker)
        # No admission: the store did not answer, and nothing is recorded.
        clean = admission is None or admission.clean
        probe = admission is not None and admission.probe
        if probe:
            self._transition(exchange, host, BreakerState.OPEN, BreakerState.HALF_OPEN)
        # A cancelled attempt (the client went away) records nothing, and so
        # does an error the sidecar raised before reaching the host.
        try:
            response = await call_next(exchange)
        except UpstreamFailure as failure:
            if failure.counts_against_host:
                # An LLM quota error opens the breaker at once: retrying cannot help.
                threshold = 1 if failure.opens_breaker else breaker.threshold
                await self._record(exchange, host, False, threshold, probe, None)
            raise
        success = not counts_as_failure(response.status)
        if not (success and clean):
            await self._record(exchange, host, success, breaker.threshold, probe, response.status)
        return response

    async def _admit(
        self, exchange: Exchange, host: str, breaker: BreakerPolicy
    ) -> Admission | None:
        """Raise CircuitOpen when refused; None when the store did not answer."""
        try:
            admission = await self._store.breaker_admit(
                host, breaker.cooldown, probe_lease=exchange.attempt_timeout
            )
        except StoreUnavailable:
            log.warning("circuit breaker for %s skipped: the store did not answer", host)
            return None
        if admission.allowed:
            return admission
        wait = max(1, math.ceil(admission.retry_after))
        exchange.note_attempt(CIRCUIT_OPEN_OUTCOME, 0.0)
        raise CircuitOpen(
            f"the circuit breaker for {host} is open; try again in {wait}s", retry_after=wait
        )

    async def _record(
        self,
        exchange: Exchange,
        host: str,
        success: bool,
        threshold: int,
        probe: bool,
        status: int | None,
    ) -> None:
        try:
            after = await self._store.breaker_record(host, success, threshold)
        except StoreUnavailable:
            log.warning("circuit breaker for %s not updated: the store did not answer", host)
            return
        if not after.changed:
            return
        if after.state is BreakerState.OPEN:
            before = BreakerState.HALF_OPEN if probe else BreakerState.CLOSED
        else:
            before = BreakerState.HALF_OPEN if probe else BreakerState.OPEN
        self._transition(exchange, host, before, after.state, status)

    def _transition(
        self,
        exchange: Exchange,
        host: str,
        before: BreakerState,
        after: BreakerState,
        status: int | None = None,
    ) -> None:
        if self._events is None:
            return
        self._events.emit(
            Event(
                time=self._clock.now(),
                kind=BREAKER,
                reason=after.value,
                request_id=exchange.request_id,
                route=exchange.route.name if exchange.route is not None else None,
                host=host,
                status=status,
                detail=f"{before.value}->{after.value}",
            )
        )
