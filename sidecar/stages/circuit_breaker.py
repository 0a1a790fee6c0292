"""The circuit breaker, per upstream host (SPEC §2.6, `X-Circuit-Breaker`).

State machine, kept in the store so that sidecars sharing Redis share it
(`Store.breaker_admit` / `breaker_record` make each step atomic):

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
"""

from __future__ import annotations

import logging
import math

from sidecar.clock import Clock
from sidecar.errors import CircuitOpen, StoreUnavailable, UpstreamFailure
from sidecar.exchange import Exchange, Next, Response
from sidecar.policy import BreakerPolicy
from sidecar.retry_budget import upstream_host
from sidecar.store.base import Store

log = logging.getLogger(__name__)

#: The attempt log's outcome for an attempt the open circuit refused.
CIRCUIT_OPEN_OUTCOME = "circuit_open"


def counts_as_failure(status: int) -> bool:
    """True for an answer that shows the upstream unwell: any 5xx."""
    return status >= 500


class CircuitBreaker:
    """Admits or refuses each attempt by its host's breaker, then records the outcome."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        # Kept for symmetry with the other stages; the store reads its own
        # clock for every breaker time.
        self._clock = clock

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        breaker = exchange.policy.circuit_breaker
        if breaker is None:
            return await call_next(exchange)
        host = upstream_host(exchange.target)
        clean = await self._admit(exchange, host, breaker)
        # A cancelled attempt (the client went away) records nothing, and so
        # does an error the sidecar raised before reaching the host.
        try:
            response = await call_next(exchange)
        except UpstreamFailure:
            await self._record(host, False, breaker.threshold)
            raise
        success = not counts_as_failure(response.status)
        if not (success and clean):
            await self._record(host, success, breaker.threshold)
        return response

    async def _admit(self, exchange: Exchange, host: str, breaker: BreakerPolicy) -> bool:
        """Raise CircuitOpen when refused; True when a success needs no record."""
        try:
            admission = await self._store.breaker_admit(
                host, breaker.cooldown, probe_lease=exchange.attempt_timeout
            )
        except StoreUnavailable:
            log.warning("circuit breaker for %s skipped: the store did not answer", host)
            return True
        if admission.allowed:
            return admission.clean
        wait = max(1, math.ceil(admission.retry_after))
        exchange.note_attempt(CIRCUIT_OPEN_OUTCOME, 0.0)
        raise CircuitOpen(
            f"the circuit breaker for {host} is open; try again in {wait}s", retry_after=wait
        )

    async def _record(self, host: str, success: bool, threshold: int) -> None:
        try:
            await self._store.breaker_record(host, success, threshold)
        except StoreUnavailable:
            log.warning("circuit breaker for %s not updated: the store did not answer", host)
