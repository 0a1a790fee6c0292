"""Failover: each target in turn once the previous one's retries are spent.

`exchange.targets` holds the primary URL then the `X-Failover-URL` ones
(later, a route's endpoints). A target that answers with a retryable status
or gives no response at all hands over to the next; the last one's outcome
is what the client gets. Served by a later target: `X-Rescued: failover`.
"""

from __future__ import annotations

from sidecar.errors import UpstreamFailure
from sidecar.exchange import Exchange, Next, Response


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
            if index == last or not retry_on.status_is_retryable(response.status):
                exchange.answered_by = url
                if index > 0 and response.status < 400:
                    exchange.rescue = "failover"
                return response
            await response.discard()
        raise AssertionError("a request always has at least one target")


def _final_error(exchange: Exchange, failure: UpstreamFailure) -> Exception:
    """504 when every attempt timed out, else 502 (SPEC §2.6)."""
    outcomes = {outcome for _, outcome, _ in exchange.attempt_log}
    if outcomes <= {"timeout"}:
        return UpstreamFailure("timeout", failure.detail).as_error()
    return UpstreamFailure("connect-failure", failure.detail).as_error()
