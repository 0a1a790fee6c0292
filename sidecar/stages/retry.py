"""Retries with exponential backoff and full jitter (SPEC §2.6).

    delay(n) = random(0, min(cap, base * 2**(n-1)))      n = 1, 2, ...

with `cap` = 10 s. When the upstream says how long to wait (`Retry-After` in
seconds or as an HTTP-date, `retry-after-ms`, `x-ms-retry-after-ms`), the
wait is at least that, still capped. A wait that would end past the
request's deadline is not taken: the last outcome is returned at once.

Retried: the outcomes `X-Retry-On` names (default: connection failures,
resets, timeouts, 5xx except 501, and 429). Other answers return at once,
and so does every error the sidecar raises itself: `CircuitOpen` from the
breaker below stops the loop, since the circuit just opened.

Each retry must also fit the host's retry budget (`sidecar.outbound.retry_budget`):
over it, the last outcome is returned as it is, and the attempt log says
`<outcome>; over retry budget`.
"""

from __future__ import annotations

import email.utils
import math

from sidecar.clock import Clock
from sidecar.errors import UpstreamFailure
from sidecar.exchange import OVER_BUDGET, Exchange, Headers, Next, Response
from sidecar.headers import upstream_host
from sidecar.outbound.retry_budget import RetryBudget
from sidecar.policy import RETRY_DELAY_CAP


def backoff_delay(attempt: int, base: float, draw: float, cap: float = RETRY_DELAY_CAP) -> float:
    """Full-jitter delay before retry number `attempt` (1-based); `draw` in [0, 1)."""
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return draw * ceiling


def upstream_wait(headers: Headers, now: float) -> float | None:
    """Seconds the upstream asked us to wait, from its response headers, or None."""
    for name, value in headers:
        try:
            if name in ("retry-after-ms", "x-ms-retry-after-ms"):
                return max(0.0, float(value) / 1000)
            if name == "retry-after":
                return _retry_after(value, now)
        except (ValueError, OverflowError):
            continue
    return None


def _retry_after(value: str, now: float) -> float | None:
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    parsed = email.utils.parsedate_to_datetime(text)
    if parsed is None or parsed.tzinfo is None:
        return None
    return max(0.0, parsed.timestamp() - now)


class Retry:
    """Runs the inner chain up to 1 + X-Retry-Count times for one target."""

    def __init__(self, clock: Clock, budget: RetryBudget | None = None) -> None:
        self._clock = clock
        self._budget = budget if budget is not None else RetryBudget()

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        host = upstream_host(exchange.target)
        self._budget.request_started(host)
        try:
            return await self._attempts(exchange, call_next, host)
        finally:
            self._budget.request_finished(host)

    async def _attempts(self, exchange: Exchange, call_next: Next, host: str) -> Response:
        policy = exchange.policy
        attempt = 0
        # True while this request holds one of the host's retry slots: from
        # the grant, through the backoff wait, to the end of the retry.
        holds_slot = False
        try:
            while True:
                attempt += 1
                exchange.attempts += 1
                response: Response | None = None
                failed: UpstreamFailure | None = None
                try:
                    response = await call_next(exchange)
                except UpstreamFailure as failure:
                    if attempt > policy.retry_count or not policy.retry_on.failure_is_retryable(
                        failure.kind
                    ):
                        exchange.note_attempt(failure.kind, 0.0)
                        raise
                    outcome, asked, failed = failure.kind, None, failure
                else:
                    if attempt > policy.retry_count or not policy.retry_on.status_is_retryable(
                        response.status
                    ):
                        exchange.note_attempt(str(response.status), 0.0)
                        if attempt > 1 and response.status < 400:
                            exchange.rescue = "retry"
                        return response
                    outcome = str(response.status)
                    asked = upstream_wait(response.headers, self._clock.now())
                finally:
                    if holds_slot:
                        holds_slot = False
                        self._budget.retry_finished(host)
                wait = self._wait(attempt, policy.retry_delay, asked)
                if not self._fits_deadline(exchange, wait):
                    return _give_up(exchange, outcome, response, failed)
                if not self._budget.try_retry(host):
                    return _give_up(exchange, f"{outcome}; {OVER_BUDGET}", response, failed)
                holds_slot = True
                exchange.note_attempt(outcome, wait)
                if response is not None:
                    await response.discard()
                await self._clock.sleep(wait)
        finally:
            if holds_slot:
                self._budget.retry_finished(host)

    def _wait(self, attempt: int, base: float, asked: float | None) -> float:
        delay = backoff_delay(attempt, base, self._clock.random())
        if asked is not None:
            delay = max(delay, asked)
        return min(delay, RETRY_DELAY_CAP)

    def _fits_deadline(self, exchange: Exchange, wait: float) -> bool:
        deadline = exchange.policy.deadline
        if deadline is None:
            return True
        elapsed = self._clock.monotonic() - exchange.started
        return elapsed + wait < deadline and not math.isclose(elapsed + wait, deadline)


def _give_up(
    exchange: Exchange, outcome: str, response: Response | None, failed: UpstreamFailure | None
) -> Response:
    """The last outcome as it came: the response, or the failure raised again."""
    exchange.note_attempt(outcome, 0.0)
    if failed is not None:
        raise failed
    assert response is not None
    return response
