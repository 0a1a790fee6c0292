"""The Redis store's LLM budgets, every key under one hash tag (one cluster slot),
so one script checks and reserves across every scope at once:

    mirapi:llm:{mirapi-llm}:budgets       hash  scope -> limit (nano-USD)
    mirapi:llm:{mirapi-llm}:held          hash  reservation id -> JSON {day, amount,
                                                scopes}: not yet settled or released
    mirapi:llm:{mirapi-llm}:finished      zset  settled or released ids, scored by
                                                when (kept FINISHED_KEEP)
    mirapi:llm:{mirapi-llm}:days          zset  the days with spend, scored by ordinal
    mirapi:llm:{mirapi-llm}:spend:DAY     hash  s:SCOPE spent, r:SCOPE reserved,
                                                n:SCOPE requests, i:SCOPE / o:SCOPE
                                                input / output tokens
    mirapi:llm:{mirapi-llm}:expiry:DAY    zset  DAY's held ids, scored by expires_at

Every key a script touches is one of its KEYS (the day's keys are named by
the caller: the held entry says which day a settle or release belongs to,
and a script that finds another day answers it, for the caller to call
again with that day's keys). Money is HINCRBY on integer strings (exact);
a Lua comparison of sums stays below 2**53 (`llm.budgets.MAX_USD`). A day's
keys expire SPEND_KEEP_DAYS after it ends; `days` is trimmed to match.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from sidecar.llm.budgets import (
    SPEND_KEEP_DAYS,
    check_day,
    day_end,
    day_ordinal,
    oldest_kept_day,
    previous_day,
    utc_day,
)
from sidecar.store.budgets import (
    FINISHED_KEEP,
    Budget,
    Refusal,
    SpendRow,
    check_amount,
    check_limit,
    check_settlement,
)
from sidecar.store.redis.client import GC_GRACE, RedisBase, millis, text

#: The hash tag of every budget key: one slot for all of them.
TAG = "{mirapi-llm}"
_DAY_SECONDS = 86_400.0
#: Settle or release finding its reservation on another day calls again, at most this often.
_DAY_HOPS = 3

# KEYS, in every script: 1 budgets, 2 held, 3 finished, 4 days, 5 spend:DAY,
# 6 expiry:DAY, 7 spend:DAY-1, 8 expiry:DAY-1 (the last two in RESERVE only).
# `forget_expired` frees a day's reservations whose expires_at <= now.
_COMMON = """
local function add(spend, field, scope, amount)
  redis.call('HINCRBY', spend, field .. scope, string.format('%d', amount))
end
local function forget_expired(spend, expiry, now)
  local ids = redis.call('ZRANGEBYSCORE', expiry, '-inf', now)
  for _, id in ipairs(ids) do
    local data = redis.call('HGET', KEYS[2], id)
    if data then
      local held = cjson.decode(data)
      for _, scope in ipairs(held.scopes) do add(spend, 'r:', scope, -held.amount) end
      redis.call('HDEL', KEYS[2], id)
    end
  end
  if #ids > 0 then redis.call('ZREMRANGEBYSCORE', expiry, '-inf', now) end
end
"""

# ARGV: now, amount, day, day ordinal, id, expires_at, held JSON, oldest kept
# ordinal, finished before, day keys' expiry (ms), then the scopes (unique).
# {0} reserved; {1, scope, limit, spent, reserved} refused; {2} id used before.
RESERVE = (
    _COMMON
    + """
local now = ARGV[1]
local amount = tonumber(ARGV[2])
forget_expired(KEYS[7], KEYS[8], now)
forget_expired(KEYS[5], KEYS[6], now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[9])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[8])
for i = 11, #ARGV do
  local scope = ARGV[i]
  local limit = redis.call('HGET', KEYS[1], scope)
  if limit then
    local spent = redis.call('HGET', KEYS[5], 's:' .. scope) or '0'
    local reserved = redis.call('HGET', KEYS[5], 'r:' .. scope) or '0'
    if tonumber(spent) + tonumber(reserved) + amount > tonumber(limit) then
      return {1, scope, limit, spent, reserved}
    end
  end
end
if redis.call('HEXISTS', KEYS[2], ARGV[5]) == 1 or redis.call('ZSCORE', KEYS[3], ARGV[5]) then
  return {2}
end
for i = 11, #ARGV do add(KEYS[5], 'r:', ARGV[i], amount) end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[7])
redis.call('ZADD', KEYS[6], ARGV[6], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
redis.call('PEXPIRE', KEYS[5], ARGV[10])
redis.call('PEXPIRE', KEYS[6], ARGV[10])
return {0}
"""
)

# ARGV: now, id, day, day ordinal, cost, input tokens, output tokens, day
# keys' expiry (ms), then the scopes (unique) for a reservation no longer held.
# {0} done (or finished before); {1, day} the reservation is of that day.
SETTLE = (
    _COMMON
    + """
if redis.call('ZSCORE', KEYS[3], ARGV[2]) then return {0} end
local data = redis.call('HGET', KEYS[2], ARGV[2])
local freed = 0
local scopes = {}
if data then
  local held = cjson.decode(data)
  if held.day ~= ARGV[3] then return {1, held.day} end
  freed = held.amount
  scopes = held.scopes
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[6], ARGV[2])
else
  for i = 9, #ARGV do scopes[#scopes + 1] = ARGV[i] end
end
local cost = tonumber(ARGV[5])
local input = tonumber(ARGV[6])
local output = tonumber(ARGV[7])
for _, scope in ipairs(scopes) do
  add(KEYS[5], 's:', scope, cost)
  add(KEYS[5], 'r:', scope, -freed)
  add(KEYS[5], 'n:', scope, 1)
  add(KEYS[5], 'i:', scope, input)
  add(KEYS[5], 'o:', scope, output)
end
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
redis.call('PEXPIRE', KEYS[5], ARGV[8])
return {0}
"""
)

# ARGV: now, id, day. {0} done; {1, day} the reservation is of that day.
RELEASE = (
    _COMMON
    + """
if redis.call('ZSCORE', KEYS[3], ARGV[2]) then return {0} end
local data = redis.call('HGET', KEYS[2], ARGV[2])
if data then
  local held = cjson.decode(data)
  if held.day ~= ARGV[3] then return {1, held.day} end
  for _, scope in ipairs(held.scopes) do add(KEYS[5], 'r:', scope, -held.amount) end
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[6], ARGV[2])
end
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
return {0}
"""
)

# ARGV: now. The day's tally (HGETALL), once its expired reservations are freed.
SPEND_DAY = (
    _COMMON
    + """
forget_expired(KEYS[5], KEYS[6], ARGV[1])
return redis.call('HGETALL', KEYS[5])
"""
)

_FIELDS = {"s": 0, "r": 1, "n": 2, "i": 3, "o": 4}


class RedisBudgets(RedisBase):
    def __init__(self) -> None:
        super().__init__()
        self._llm_reserve = self._client.register_script(RESERVE)
        self._llm_settle = self._client.register_script(SETTLE)
        self._llm_release = self._client.register_script(RELEASE)
        self._llm_spend_day = self._client.register_script(SPEND_DAY)
        self._llm_root = f"{self._prefix}llm:{TAG}:"

    def _llm_keys(self, *days: str) -> list[str]:
        root = self._llm_root
        keys = [f"{root}budgets", f"{root}held", f"{root}finished", f"{root}days"]
        for day in days:
            keys += [f"{root}spend:{day}", f"{root}expiry:{day}"]
        return keys

    def _day_ttl(self, day: str, now: float) -> int:
        return millis(day_end(day) + SPEND_KEEP_DAYS * _DAY_SECONDS - now + GC_GRACE)

    async def set_budget(self, scope: str, limit_nano: int) -> None:
        check_limit(limit_nano)
        await self._call(self._client.hset(f"{self._llm_root}budgets", scope, str(limit_nano)))

    async def remove_budget(self, scope: str) -> bool:
        return bool(await self._call(self._client.hdel(f"{self._llm_root}budgets", scope)))

    async def list_budgets(self) -> list[Budget]:
        return [Budget(scope, limit) for scope, limit in sorted((await self._limits()).items())]

    async def _limits(self) -> dict[str, int]:
        raw = await self._call(self._client.hgetall(f"{self._llm_root}budgets"))
        return {text(scope): int(text(limit)) for scope, limit in raw.items()}

    async def reserve(
        self,
        scopes: Sequence[str],
        amount_nano: int,
        day: str,
        reservation_id: str,
        expires_at: float,
    ) -> Refusal | None:
        check_amount(amount_nano)
        check_day(day)
        now = self._clock.now()
        unique = list(dict.fromkeys(scopes))
        held = orjson.dumps({"day": day, "amount": amount_nano, "scopes": unique})
        reply = await self._call(
            self._llm_reserve(
                keys=self._llm_keys(day, previous_day(day)),
                args=[
                    repr(now),
                    str(amount_nano),
                    day,
                    day_ordinal(day),
                    reservation_id,
                    repr(float(expires_at)),
                    held,
                    day_ordinal(oldest_kept_day(now)),
                    repr(now - FINISHED_KEEP),
                    self._day_ttl(day, now),
                    *unique,
                ],
            )
        )
        verdict = int(reply[0])
        if verdict == 2:
            raise ValueError("a reservation id is used once")
        if verdict == 1:
            scope, limit, spent, reserved = (text(part) for part in reply[1:5])
            return Refusal(scope, int(limit), int(spent), int(reserved))
        return None

    async def settle(
        self,
        reservation_id: str,
        scopes: Sequence[str],
        day: str,
        cost_nano: int,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        check_settlement(cost_nano, input_tokens, output_tokens)
        check_day(day)
        unique = list(dict.fromkeys(scopes))
        for _ in range(_DAY_HOPS):
            now = self._clock.now()
            reply = await self._call(
                self._llm_settle(
                    keys=self._llm_keys(day),
                    args=[
                        repr(now),
                        reservation_id,
                        day,
                        day_ordinal(day),
                        str(cost_nano),
                        str(input_tokens),
                        str(output_tokens),
                        self._day_ttl(day, now),
                        *unique,
                    ],
                )
            )
            if int(reply[0]) == 0:
                return
            day = text(reply[1])

    async def release(self, reservation_id: str) -> None:
        day = utc_day(self._clock.now())
        for _ in range(_DAY_HOPS):
            reply = await self._call(
                self._llm_release(
                    keys=self._llm_keys(day), args=[repr(self._clock.now()), reservation_id, day]
                )
            )
            if int(reply[0]) == 0:
                return
            day = text(reply[1])

    async def spend(self, scope: str | None = None, day: str | None = None) -> list[SpendRow]:
        if day is None:
            known = await self._call(self._client.zrange(f"{self._llm_root}days", 0, -1))
            days = [text(d) for d in known if isinstance(d, bytes | str)]
        else:
            days = [day]
        # The day keys' server-side expiry is only garbage collection: by the
        # store's clock, a day past keeping is gone.
        oldest = oldest_kept_day(self._clock.now())
        limits = await self._limits()
        rows: list[SpendRow] = []
        for each in sorted(d for d in days if d >= oldest):
            flat = await self._call(
                self._llm_spend_day(keys=self._llm_keys(each), args=[repr(self._clock.now())])
            )
            rows += _rows(each, flat, limits, scope)
        return rows


def _rows(
    day: str, flat: Sequence[bytes | str], limits: dict[str, int], only: str | None
) -> list[SpendRow]:
    """The rows of one day's tally hash (field, value, field, value, ...)."""
    tallies: dict[str, list[int]] = {}
    for i in range(0, len(flat) - 1, 2):
        kind, _, scope = text(flat[i]).partition(":")
        if kind not in _FIELDS or (only is not None and scope != only):
            continue
        tallies.setdefault(scope, [0] * 5)[_FIELDS[kind]] = int(text(flat[i + 1]))
    return [
        SpendRow(scope, day, t[0], t[1], limits.get(scope), t[2], t[3], t[4])
        for scope, t in sorted(tallies.items())
    ]
