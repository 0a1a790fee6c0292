"""The Redis store's breakers: `mirapi:breaker:{HOST}`, a hash of state,
failures, opened_at, probe_until; each change is one script."""

from __future__ import annotations

from sidecar.store.breaker import Admission, BreakerState, BreakerStatus
from sidecar.store.redis.client import RedisBase, millis, number, text

#: Breakers have no logical expiry; one left alone this long is forgotten (closed).
BREAKER_IDLE_TTL = 24 * 3600.0

# KEYS: breaker. ARGV: now, cooldown, probe lease end, idle expiry (ms).
# {verdict, retry_after}: 0 refused, 1 allowed, 2 allowed as the probe, 3 clean.
BREAKER_ADMIT = """
local now = tonumber(ARGV[1])
local b = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'probe_until')
if b[1] == 'open' then
  local reopen = tonumber(b[2]) + tonumber(ARGV[2])
  if now < reopen then return {0, string.format('%.17g', reopen - now)} end
elseif b[1] == 'half_open' then
  local lease = tonumber(b[3] or '0')
  if lease > now then return {0, string.format('%.17g', lease - now)} end
elseif b[1] then
  return {1, '0'}
else
  return {3, '0'}
end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {2, '0'}
"""

# KEYS: breaker. ARGV: now, success ('1'/'0'), threshold, idle expiry (ms).
# {state, failures, opened_at, changed (1 when the state changed)}.
BREAKER_RECORD = """
local b = redis.call('HMGET', KEYS[1], 'state', 'failures', 'opened_at')
local state = b[1] or 'closed'
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1])
  if state == 'closed' then return {'closed', 0, '0', 0} end
  return {'closed', 0, '0', 1}
end
local failures = tonumber(b[2] or '0') + 1
local opened_at = b[3] or '0'
local changed = 0
if state == 'half_open' or (state ~= 'open' and failures >= tonumber(ARGV[3])) then
  state, opened_at, changed = 'open', ARGV[1], 1
end
redis.call('HSET', KEYS[1], 'state', state, 'failures', failures, 'opened_at', opened_at)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {state, failures, opened_at, changed}
"""


class RedisBreakers(RedisBase):
    def __init__(self) -> None:
        super().__init__()
        self._admit = self._client.register_script(BREAKER_ADMIT)
        self._record = self._client.register_script(BREAKER_RECORD)

    async def breaker_admit(self, host: str, cooldown: float, probe_lease: float) -> Admission:
        now = self._clock.now()
        verdict, retry_after = await self._call(
            self._admit(
                keys=[self._key("breaker", host)],
                args=[repr(now), repr(cooldown), repr(now + probe_lease), millis(BREAKER_IDLE_TTL)],
            )
        )
        # 0 refused, 1 allowed, 2 allowed as the probe, 3 allowed and clean.
        if int(verdict) == 0:
            return Admission(allowed=False, retry_after=number(retry_after))
        return Admission(allowed=True, probe=int(verdict) == 2, clean=int(verdict) == 3)

    async def breaker_record(self, host: str, success: bool, threshold: int) -> BreakerStatus:
        state, failures, opened_at, changed = await self._call(
            self._record(
                keys=[self._key("breaker", host)],
                args=[
                    repr(self._clock.now()),
                    "1" if success else "0",
                    threshold,
                    millis(BREAKER_IDLE_TTL),
                ],
            )
        )
        return BreakerStatus(
            BreakerState(state.decode()), int(failures), number(opened_at), bool(int(changed))
        )

    async def breaker_status(self, host: str) -> BreakerStatus:
        state, failures, opened_at = await self._call(
            self._client.hmget(self._key("breaker", host), ["state", "failures", "opened_at"])
        )
        if state is None:
            return BreakerStatus(BreakerState.CLOSED)
        return BreakerStatus(BreakerState(text(state)), int(failures or 0), number(opened_at or 0))
