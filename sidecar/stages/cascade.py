"""Failover: each target in turn once the previous one's retries are spent.

`exchange.targets` holds the primary URL then the `X-Failover-URL` ones
(later, a route's endpoints). A target that answers with a retryable status,
gives no response at all, or whose circuit breaker is open hands over to the
next; the last one's outcome is what the client gets (an open circuit there
propagates as `503 circuit_open`, for the smart cache to rescue). Served by
a later target: `X-Rescued: failover`.
"""

from __future__ import annotations

from sidecar.errors import CircuitOpen, UpstreamFailure
from sidecar.exchange import Exchange, Next, Response
from sidecar.stages.circuit_breaker import CIRCUIT_OPEN_OUTCOME


class Cascade:
    """Tries `exchange.targets` in order (the inner chain retries each)."""

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        retry_on = exchange.policy.retry_on
        last = len(exchange.targets) - 1
        for index, url in enumerate(exchange.targets):
            exchange.target = url
            try:
                response = await call_next(exchange)
            except UpstreamFailure as failure:
                if index == last:
                    raise _final_error(exchange, failure) from None
                continue
            except CircuitOpen:
                if index == last:
                    raise
                continue
            if index == last or not retry_on.status_is_retryable(response.status):
                exchange.answered_by = url
                if index > 0 and response.status < 400:
                    exchange.rescue = "failover"
                return response
            await response.discard()
        raise AssertionError("a request always has at least one target")


def _final_error(exchange: Exchange, failure: UpstreamFailure) -> Exception:
    """504 when every attempt made timed out, else 502 (SPEC §2.6).

    An outcome in the attempt log starts with the failure's kind (the retry
    stage may add `; over retry budget`); targets skipped because their
    circuit was open made no attempt and do not count.
    """
    kinds = {outcome.partition(";")[0] for _, outcome, _ in exchange.attempt_log}
    kinds.discard(CIRCUIT_OPEN_OUTCOME)
    if kinds <= {"timeout"}:
        return UpstreamFailure("timeout", failure.detail).as_error()
    return UpstreamFailure("connect-failure", failure.detail).as_error()
