"""The Redis store's rate limit buckets: `mirapi:rate:{KEY}`, a hash of tokens
and updated_at; one script per take, expiring once it would be full again."""

from __future__ import annotations

from sidecar.store.rate import RATE_EPSILON, RateDecision, check_rate
from sidecar.store.redis.client import GC_GRACE, RedisBase, millis, number

# KEYS: the bucket (hash: tokens, updated_at). ARGV: now, limit, period,
# epsilon, expiry (ms: past the time a drained bucket is full again).
# {allowed (1/0), tokens left}. The steps of `rate.take_token`, in the same
# order and in the same doubles, so Redis and memory decide alike; the
# tokens go out and come back as '%.17g' strings (exact), never as a Lua
# number in a reply (which Redis would truncate to an integer).
RATE_TAKE = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'updated_at')
local level
if b[1] then
  local elapsed = now - tonumber(b[2])
  if elapsed < 0 then elapsed = 0 end
  level = math.min(limit, tonumber(b[1]) + elapsed * (limit / tonumber(ARGV[3])))
else
  level = limit
end
local allowed = 0
if level >= 1.0 - tonumber(ARGV[4]) then
  allowed = 1
  level = math.max(0, level - 1.0)
end
local tokens = string.format('%.17g', level)
redis.call('HSET', KEYS[1], 'tokens', tokens, 'updated_at', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {allowed, tokens}
"""


class RedisRates(RedisBase):
    def __init__(self) -> None:
        super().__init__()
        self._rate_take = self._client.register_script(RATE_TAKE)

    async def rate_take(self, key: str, limit: int, period: float) -> RateDecision:
        check_rate(limit, period)
        allowed, tokens = await self._call(
            self._rate_take(
                keys=[self._key("rate", key)],
                args=[
                    repr(self._clock.now()),
                    limit,
                    repr(float(period)),
                    repr(RATE_EPSILON),
                    millis(period + GC_GRACE),
                ],
            )
        )
        return RateDecision.judge(bool(int(allowed)), number(tokens), limit, period)
