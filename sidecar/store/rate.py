"""The rate bucket capability: token buckets judged on the request path (SPEC §2.3).

`take_token` and `RateDecision.judge` are the token bucket's arithmetic,
shared by the memory backend and (mirrored step for step in Lua) the Redis
one, so both decide alike to the last bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

#: Slack in token counts, so that float rounding in a refill (49 s at 1/49
#: token a second gives 0.9999999999999999) never refuses a token that is due.
RATE_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The verdict of one `rate_take`: what a 429 and the RateLimit-* headers need."""

    allowed: bool
    #: Whole tokens left after this take (RateLimit-Remaining).
    remaining: int
    #: Seconds until the bucket is full again (RateLimit-Reset).
    reset: float
    #: Seconds until one token is available (Retry-After); 0 when allowed.
    retry_after: float = 0.0

    @classmethod
    def judge(cls, allowed: bool, tokens: float, limit: int, period: float) -> RateDecision:
        """The decision for a bucket left holding `tokens` (after the take, when allowed)."""
        rate = limit / period
        remaining = min(limit, max(0, math.floor(tokens + RATE_EPSILON)))
        reset = max(0.0, (limit - tokens) / rate)
        retry_after = 0.0 if allowed else max(0.0, (1.0 - tokens) / rate)
        return cls(allowed, remaining, reset, retry_after)


def check_rate(limit: int, period: float) -> None:
    """ValueError unless `limit` >= 1 token per a positive, finite `period`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError("a rate limit must allow at least 1 request per period")
    if not (math.isfinite(period) and period > 0):
        raise ValueError("a rate limit period must be a positive number of seconds")


def take_token(
    tokens: float | None, updated_at: float, now: float, limit: int, period: float
) -> tuple[bool, float]:
    """One token bucket step: refill since `updated_at`, then take a token if there is one.

    `tokens` None is a bucket never seen (full). Returns (allowed, tokens
    left). A clock behind `updated_at` (another sidecar's, a little skewed)
    refills nothing rather than draining. The Redis script `RATE_TAKE` does
    the same operations in the same order.
    """
    if tokens is None:
        level = float(limit)
    else:
        elapsed = max(0.0, now - updated_at)
        level = min(float(limit), tokens + elapsed * (limit / period))
    if level >= 1.0 - RATE_EPSILON:
        return True, max(0.0, level - 1.0)
    return False, level


class RateStore(Protocol):
    """On the request path; falls back to a local bucket when Redis is lost."""

    async def rate_take(self, key: str, limit: int, period: float) -> RateDecision:
        """Take one token from the bucket `key`, if it holds one (see RateDecision).

        A token bucket of capacity `limit`, refilled at limit/period tokens a
        second, judged by the store's clock; a bucket never seen is full.
        The same `key` with another `limit` keeps its tokens (capped at the
        new capacity). Embedded: this process's memory (one sidecar per data
        dir); Redis: shared by every sidecar on the server. ValueError unless
        `limit` >= 1 and `period` > 0.
        """
