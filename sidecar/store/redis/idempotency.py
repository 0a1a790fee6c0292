"""The Redis store's idempotency keys, each operation one script:

    mirapi:idem:{KEY}:lock          hash     token, fp, until, revealed
    mirapi:idem:{KEY}:rec           hash     fp, until, resp    (explicit keys' replay)
    mirapi:idem:{KEY}:res:TOKEN     hash     until, resp        (for the holder's waiters;
                                             no resp: nothing to share; written only
                                             when a claim was told TOKEN)

Waiters poll (backing off from POLL_FIRST to POLL_MAX) in real time.
"""

from __future__ import annotations

import asyncio
import time

from sidecar.store.cache import StoredResponse
from sidecar.store.idempotency import Claim, ClaimOutcome, WaitOutcome, WaitResult
from sidecar.store.redis.client import GC_GRACE, RedisBase, millis

#: How long a finished holder's response waits for its waiters (clock seconds).
RESULT_TTL = 60.0
#: idem_wait polls this often, backing off from the first to the last.
POLL_FIRST, POLL_MAX = 0.01, 0.1

# KEYS: lock, rec. ARGV: now, fingerprint, token, lock until, lock expiry (ms).
# {'acquired'|'in_flight', token} or {'mismatch', ''} or {'completed', '', response}.
IDEM_CLAIM = """
local now = tonumber(ARGV[1])
local rec = redis.call('HMGET', KEYS[2], 'fp', 'until', 'resp')
if rec[2] and tonumber(rec[2]) > now then
  if rec[1] ~= ARGV[2] then return {'mismatch', ''} end
  return {'completed', '', rec[3]}
end
local lock = redis.call('HMGET', KEYS[1], 'token', 'fp', 'until')
if lock[1] and tonumber(lock[3]) > now then
  if lock[2] ~= ARGV[2] then return {'mismatch', ''} end
  -- Someone now knows the token: the holder's finish must leave its result.
  redis.call('HSET', KEYS[1], 'revealed', '1')
  return {'in_flight', lock[1]}
end
redis.call('HSET', KEYS[1], 'token', ARGV[3], 'fp', ARGV[2], 'until', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'acquired', ARGV[3]}
"""

# KEYS: lock. ARGV: now, token, lock until, lock expiry (ms). 1 when renewed.
IDEM_RENEW = """
local lock = redis.call('HMGET', KEYS[1], 'token', 'until')
if lock[1] == ARGV[2] and tonumber(lock[2]) > tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'until', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
"""

# KEYS: lock, rec, res:TOKEN. ARGV: token, response ('' = none), keep until
# ('' = no replay), rec expiry (ms), result until, result expiry (ms).
# A result for the waiters only when a claim was told our token (else nobody
# can wait for it), or when the lock is no longer ours (it may have been told
# before it lapsed). The lock, and with it the fingerprint a replay record
# needs, only while it still carries our token, even if its lease ran out.
IDEM_FINISH = """
local lock = redis.call('HMGET', KEYS[1], 'token', 'fp', 'revealed')
local ours = lock[1] == ARGV[1]
if not ours or lock[3] then
  if ARGV[2] ~= '' then
    redis.call('HSET', KEYS[3], 'until', ARGV[5], 'resp', ARGV[2])
  else
    redis.call('HSET', KEYS[3], 'until', ARGV[5])
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
end
if ours then
  redis.call('DEL', KEYS[1])
  if ARGV[3] ~= '' then
    redis.call('HSET', KEYS[2], 'fp', lock[2], 'until', ARGV[3], 'resp', ARGV[2])
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
  end
end
return 1
"""

# KEYS: lock, res:TOKEN. ARGV: now, token.
# {'shared', response}, {'unshared'}, {'held'} (still running) or {'lost'}.
IDEM_WAIT_POLL = """
local now = tonumber(ARGV[1])
local result = redis.call('HMGET', KEYS[2], 'until', 'resp')
if result[1] and tonumber(result[1]) > now then
  if result[2] then return {'shared', result[2]} end
  return {'unshared'}
end
local lock = redis.call('HMGET', KEYS[1], 'token', 'until')
if lock[1] == ARGV[2] and tonumber(lock[2]) > now then return {'held'} end
return {'lost'}
"""


class RedisIdempotency(RedisBase):
    def __init__(self) -> None:
        super().__init__()
        self._claim = self._client.register_script(IDEM_CLAIM)
        self._renew = self._client.register_script(IDEM_RENEW)
        self._finish = self._client.register_script(IDEM_FINISH)
        self._wait_poll = self._client.register_script(IDEM_WAIT_POLL)

    def _idem_key(self, key: str, part: str) -> str:
        return f"{self._key('idem', key)}:{part}"

    async def idem_claim(self, key: str, fingerprint: str, token: str, lock_ttl: float) -> Claim:
        now = self._clock.now()
        reply = await self._call(
            self._claim(
                keys=[self._idem_key(key, "lock"), self._idem_key(key, "rec")],
                args=[
                    repr(now),
                    fingerprint,
                    token,
                    repr(now + lock_ttl),
                    millis(lock_ttl + GC_GRACE),
                ],
            )
        )
        outcome = ClaimOutcome(reply[0].decode())
        if outcome is ClaimOutcome.COMPLETED:
            return Claim(outcome, record=StoredResponse.decode(reply[2]))
        return Claim(outcome, token=reply[1].decode())

    async def idem_renew(self, key: str, token: str, lock_ttl: float) -> bool:
        now = self._clock.now()
        renewed = await self._call(
            self._renew(
                keys=[self._idem_key(key, "lock")],
                args=[repr(now), token, repr(now + lock_ttl), millis(lock_ttl + GC_GRACE)],
            )
        )
        return bool(int(renewed))

    async def idem_finish(
        self,
        key: str,
        token: str,
        response: StoredResponse | None,
        keep_until: float | None,
    ) -> None:
        now = self._clock.now()
        # Only a response can be replayed, and only until keep_until.
        keep = keep_until if response is not None and keep_until is not None else now
        await self._call(
            self._finish(
                keys=[
                    self._idem_key(key, "lock"),
                    self._idem_key(key, "rec"),
                    self._idem_key(key, f"res:{token}"),
                ],
                args=[
                    token,
                    b"" if response is None else response.encode(),
                    repr(keep) if keep > now else "",
                    millis(keep - now + GC_GRACE),
                    repr(now + RESULT_TTL),
                    millis(RESULT_TTL + GC_GRACE),
                ],
            )
        )

    async def idem_wait(self, key: str, token: str, timeout: float) -> WaitResult:
        keys = [self._idem_key(key, "lock"), self._idem_key(key, f"res:{token}")]
        # Real time, not the injected clock: a fake clock's sleep returns at once.
        deadline = time.monotonic() + timeout
        pause = POLL_FIRST
        while True:
            reply = await self._call(
                self._wait_poll(keys=keys, args=[repr(self._clock.now()), token])
            )
            verdict = reply[0]
            if verdict == b"shared":
                return WaitResult(WaitOutcome.SHARED, StoredResponse.decode(reply[1]))
            if verdict == b"unshared":
                return WaitResult(WaitOutcome.UNSHARED)
            left = deadline - time.monotonic()
            if verdict == b"lost" or left <= 0:
                return WaitResult(WaitOutcome.LOST)
            await asyncio.sleep(min(pause, left))
            pause = min(POLL_MAX, pause * 1.5)
