"""X-Deadline: one bound over the whole request, retries and failover included.

It covers everything up to the response's headers; once the body streams,
the per-read timeout takes over (a stream is never cut by the deadline).
"""

from __future__ import annotations

import asyncio

from sidecar.errors import GatewayTimeout
from sidecar.exchange import Exchange, Next, Response


class Deadline:
    """Answers 504 deadline_exceeded when X-Deadline runs out."""

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        deadline = exchange.policy.deadline
        if deadline is None:
            return await call_next(exchange)
        try:
            async with asyncio.timeout(deadline):
                return await call_next(exchange)
        except TimeoutError:
            raise GatewayTimeout(
                f"X-Deadline of {deadline:g}s ran out after {exchange.attempts} attempt(s)",
                code="deadline_exceeded",
            ) from None
