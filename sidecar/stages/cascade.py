"""Failover and priority routes: each target in turn once the previous one's retries are spent.

`exchange.targets` holds the primary URL then the `X-Failover-URL` ones, or
a route's endpoints in order (the `priority` strategy, and a `race` that
may not race). A target that answers with a retryable status, gives no
response at all, or whose circuit breaker is open hands over to the next;
the last one's outcome is what the client gets (an open circuit there
propagates as `503 circuit_open`, for the smart cache to rescue). An LLM
endpoint's refusal that moves the call on (`EndpointRefused`: a quota or
context-length error) hands over too, and is answered as it came when it
was the last endpoint's; when the endpoints left could not take the call at
all (skipped: no model there, or nothing to translate it to), the client
gets the last real failure. Each
target gets its own retries and breaker, since both sit inside this stage.

Served by a later target with a status below 400: `X-Rescued: failover` for
X-Failover-URL, `X-Rescued: cascade_fallback` for a route's endpoint.
"""

from __future__ import annotations

from sidecar.errors import CircuitOpen, EndpointRefused, MirApiError, UpstreamFailure
from sidecar.exchange import CIRCUIT_OPEN_OUTCOME, Exchange, Next, Response


class Cascade:
    """Tries `exchange.targets` in order (the inner chain retries each)."""

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        retry_on = exchange.policy.retry_on
        last = len(exchange.targets) - 1
        fallback = exchange.fallback_rescue()
        # An LLM call's last real failure, whole (already read): the answer
        # when every later endpoint was skipped without a call (SPEC §10).
        kept: tuple[str, Response] | None = None
        for index, url in enumerate(exchange.targets):
            exchange.aim(index)
            try:
                response = await call_next(exchange)
            except UpstreamFailure as failure:
                refused = failure if isinstance(failure, EndpointRefused) else None
                if refused is not None and refused.answer is not None:
                    kept = (url, refused.answer)
                if index < last:
                    continue
                if refused is not None and kept is not None:
                    exchange.answered_by, answer = kept
                    return answer
                raise final_error(exchange.attempt_log, failure) from None
            except CircuitOpen:
                if index == last:
                    raise
                continue
            if index == last or not retry_on.status_is_retryable(response.status):
                exchange.answered_by = url
                if index > 0 and response.status < 400:
                    exchange.rescue = fallback
                return response
            if exchange.llm is not None and response.stream is None:
                kept = (url, response)
            else:
                await response.discard()
        raise AssertionError("a request always has at least one target")


def final_error(attempt_log: list[tuple[str, str, float]], failure: UpstreamFailure) -> MirApiError:
    """504 when every attempt made timed out, else 502 (SPEC §2.6).

    An outcome in the attempt log starts with the failure's kind (the retry
    stage may add `; over retry budget`); targets skipped because their
    circuit was open made no attempt and do not count.
    """
    kinds = {outcome.partition(";")[0] for _, outcome, _ in attempt_log}
    kinds.discard(CIRCUIT_OPEN_OUTCOME)
    if kinds <= {"timeout"}:
        return UpstreamFailure("timeout", failure.detail).as_error()
    return UpstreamFailure("connect-failure", failure.detail).as_error()
