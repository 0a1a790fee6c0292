"""Per-client rate limits: a token bucket per client, and per client per route (issue 7).

Configured as `rate_limit = "100/min"` (the sidecar's, for every request)
and a route's own `rate_limit` (on top, for that route). Off by default.
The client is its key's id, or its IP address while no keys exist. Buckets
live in the store, so sidecars sharing Redis share them
(`RateStore.rate_take`); a store that cannot answer lets the request through
(the limit protects the upstream's quota; it must never be why a request
fails), like the circuit breaker.

Over the limit: `429 rate_limited` with `Retry-After`. Every response under
a limit carries the IETF RateLimit fields (draft-ietf-httpapi-ratelimit-
headers) for the tightest bucket: `RateLimit-Limit`, `RateLimit-Remaining`
and `RateLimit-Reset` (seconds until the bucket is full again).
"""

from __future__ import annotations

import functools
import logging
import math

from sidecar.config import parse_rate
from sidecar.errors import RateLimited, StoreUnavailable
from sidecar.exchange import Exchange, Next, Response
from sidecar.store.rate import RateDecision, RateStore

log = logging.getLogger(__name__)

Rate = tuple[int, float]
#: A route's rate, parsed once per distinct text rather than per request.
_route_rate = functools.lru_cache(maxsize=256)(parse_rate)


def client_of(exchange: Exchange) -> str:
    """Whom a bucket belongs to: the client key, else the address (else this machine)."""
    if exchange.client_id != "local":
        return f"key:{exchange.client_id}"
    return f"addr:{exchange.client_address or 'local'}"


def rate_headers(limit: int, decision: RateDecision) -> list[tuple[str, str]]:
    """The IETF RateLimit fields for one bucket's decision."""
    return [
        ("ratelimit-limit", str(limit)),
        ("ratelimit-remaining", str(max(0, decision.remaining))),
        ("ratelimit-reset", str(math.ceil(decision.reset))),
    ]


class RateLimit:
    """Takes a token from each bucket that applies; refuses with 429 when one is empty."""

    def __init__(self, store: RateStore, rate_limit: str | None) -> None:
        self._store = store
        self._rate: Rate | None = None if rate_limit is None else parse_rate(rate_limit)

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        buckets = self._buckets(exchange)
        if not buckets:
            return await call_next(exchange)
        tightest: tuple[int, RateDecision] | None = None
        for key, (limit, period) in buckets:
            decision = await self._take(key, limit, period)
            if decision is None:
                continue
            if not decision.allowed:
                raise RateLimited(
                    f"over the rate limit of {limit} requests per {_per(period)}",
                    retry_after=max(1, math.ceil(decision.retry_after)),
                    headers=tuple(rate_headers(limit, decision)),
                )
            if tightest is None or decision.remaining < tightest[1].remaining:
                tightest = (limit, decision)
        response = await call_next(exchange)
        if tightest is not None:
            response.headers.extend(rate_headers(*tightest))
        return response

    def _buckets(self, exchange: Exchange) -> list[tuple[str, Rate]]:
        client = client_of(exchange)
        buckets: list[tuple[str, Rate]] = []
        if self._rate is not None:
            buckets.append((client, self._rate))
        route = exchange.route
        if route is not None and route.rate_limit is not None:
            buckets.append((f"route:{route.name}:{client}", _route_rate(route.rate_limit)))
        return buckets

    async def _take(self, key: str, limit: int, period: float) -> RateDecision | None:
        try:
            return await self._store.rate_take(key, limit, period)
        except StoreUnavailable:
            log.warning("rate limit skipped: the store did not answer")
            return None


def _per(period: float) -> str:
    return {1.0: "second", 60.0: "minute", 3600.0: "hour"}.get(period, f"{period:g} s")
