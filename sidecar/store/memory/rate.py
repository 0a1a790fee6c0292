"""The memory store's rate limit buckets (`rate.take_token`): what the
embedded store uses on the request path, and the Redis store's fallback.

A bucket that has refilled is the same as none, so the full ones are swept
once the map has doubled.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.store.memory.state import SWEEP_FLOOR, MemoryState
from sidecar.store.rate import RateDecision, check_rate, take_token


@dataclass(frozen=True, slots=True)
class _Bucket:
    """A rate limit bucket: `tokens` as of `updated_at`, full again at `full_at`."""

    tokens: float
    updated_at: float
    full_at: float


class MemoryRates(MemoryState):
    def __init__(self) -> None:
        super().__init__()
        self._buckets: dict[str, _Bucket] = {}
        self._buckets_sweep_above = SWEEP_FLOOR

    async def rate_take(self, key: str, limit: int, period: float) -> RateDecision:
        check_rate(limit, period)
        now = self._clock.now()
        bucket = self._buckets.get(key)
        allowed, tokens = take_token(
            None if bucket is None else bucket.tokens,
            0.0 if bucket is None else bucket.updated_at,
            now,
            limit,
            period,
        )
        decision = RateDecision.judge(allowed, tokens, limit, period)
        self._buckets[key] = _Bucket(tokens, now, now + decision.reset)
        if len(self._buckets) > self._buckets_sweep_above:
            self._buckets = {k: b for k, b in self._buckets.items() if b.full_at > now}
            self._buckets_sweep_above = max(SWEEP_FLOOR, 2 * len(self._buckets))
        return decision
