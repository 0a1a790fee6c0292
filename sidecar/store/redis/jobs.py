"""The Redis store's jobs and webhook secret: one queue in one slot (`{jobs}`).

    mirapi:jobs:{jobs}:job:ID       hash     data (encode_job), owner, status
    mirapi:jobs:{jobs}:due          zset     ID -> due_at (absent: never due)
    mirapi:jobs:{jobs}:created      zset     ID -> created_at (every job, for listing)
    mirapi:jobs:{jobs}:status:S     zset     ID -> created_at (the jobs of status S)
    mirapi:jobs:{jobs}:active       set      IDs with work left (phase not done)
    mirapi:jobs:{jobs}:finished     zset     ID -> finished_at (phase done, for purge)
    mirapi:webhook:{jobs}:secret    string   the install's signing secret

Each job call is one atomic script; the scripts build the job and status
keys from the prefix they are given, always inside that slot. A claim takes
the first member of `due` with a score <= now and moves its score to now +
lease (a lease, never a pop: a claimer that dies lets the job come due
again for any sidecar). The `due` score and the hash's `owner` field are the
truth for `due_at` and `owner` (Lua never parses the JSON in `data`);
Python rebuilds the Job with them. Jobs never expire: with an eviction
policy, use a `volatile-*` one, and persistence (AOF) for jobs to survive a
Redis restart.

Behind Sentinel (`_replica_acks`), adding a job also waits (WAIT, at most
REPLICA_WAIT_MS) until a replica holds it, on the same connection, before
the job is reported added: a failover promotes that replica, so a job the
client was told is accepted is not lost with the old primary. A replica
that does not answer in time does not refuse the job (it is still on the
primary); the wait is only bounded.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from sidecar.jobs.model import Job, decode_job, encode_job
from sidecar.store.redis.client import RedisBase, as_bytes, number, text

#: The tag of every job key (and the webhook secret): one queue, one slot.
JOBS_TAG = "{jobs}"
#: Finished jobs removed per purge script call (bounds the time Redis is busy).
PURGE_BATCH = 500
#: How long adding a job waits for a replica's copy (behind Sentinel).
REPLICA_WAIT_MS = 500

# KEYS: due, created, active, finished. ARGV: prefix, id, owner ('' = any),
# data, due_at ('' = never), status, created_at, finished_at ('' = none),
# done ('1'/'0'). The job is written whole and its owner cleared; with an
# owner, only while that owner holds it.
JOB_SAVE = """
local job = ARGV[1] .. 'job:' .. ARGV[2]
local stored = redis.call('HMGET', job, 'owner', 'status')
if ARGV[3] ~= '' and stored[1] ~= ARGV[3] then return 0 end
if stored[2] and stored[2] ~= ARGV[6] then
  redis.call('ZREM', ARGV[1] .. 'status:' .. stored[2], ARGV[2])
end
redis.call('HSET', job, 'data', ARGV[4], 'status', ARGV[6])
redis.call('HDEL', job, 'owner')
redis.call('ZADD', ARGV[1] .. 'status:' .. ARGV[6], ARGV[7], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[2])
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[2])
else
  redis.call('ZREM', KEYS[1], ARGV[2])
end
if ARGV[9] == '1' then
  redis.call('SREM', KEYS[3], ARGV[2])
  if ARGV[8] ~= '' then
    redis.call('ZADD', KEYS[4], ARGV[8], ARGV[2])
  else
    redis.call('ZREM', KEYS[4], ARGV[2])
  end
else
  redis.call('SADD', KEYS[3], ARGV[2])
  redis.call('ZREM', KEYS[4], ARGV[2])
end
return 1
"""

# KEYS: due. ARGV: prefix, now, lease end, owner. The job due earliest
# (ties: lowest id), leased: {id, data}; nil when none is due.
JOB_CLAIM = """
while true do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, 1)
  if #ids == 0 then return false end
  local job = ARGV[1] .. 'job:' .. ids[1]
  local data = redis.call('HGET', job, 'data')
  if data then
    redis.call('ZADD', KEYS[1], ARGV[3], ids[1])
    redis.call('HSET', job, 'owner', ARGV[4])
    return {ids[1], data}
  end
  -- A due entry without its job (removed by hand): drop it and look again.
  redis.call('ZREM', KEYS[1], ids[1])
end
"""

# KEYS: due. ARGV: prefix, id, owner, lease end.
JOB_RENEW = """
if redis.call('HGET', ARGV[1] .. 'job:' .. ARGV[2], 'owner') ~= ARGV[3] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
return 1
"""

# KEYS: due, and the zset to list from. ARGV: prefix, limit. Newest first:
# {data, owner or '', due_at or ''} for each job.
JOB_LIST = """
local out = {}
if tonumber(ARGV[2]) <= 0 then return out end
for _, id in ipairs(redis.call('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)) do
  local job = redis.call('HMGET', ARGV[1] .. 'job:' .. id, 'data', 'owner')
  if job[1] then
    table.insert(out, job[1])
    table.insert(out, job[2] or '')
    table.insert(out, redis.call('ZSCORE', KEYS[1], id) or '')
  end
end
return out
"""

# KEYS: due. ARGV: prefix, id. {data, owner or '', due_at or ''}, or nil.
JOB_GET = """
local job = redis.call('HMGET', ARGV[1] .. 'job:' .. ARGV[2], 'data', 'owner')
if not job[1] then return false end
return {job[1], job[2] or '', redis.call('ZSCORE', KEYS[1], ARGV[2]) or ''}
"""

# KEYS: due, created, active, finished. ARGV: prefix, finished before, batch.
JOB_PURGE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
  local job = ARGV[1] .. 'job:' .. id
  local status = redis.call('HGET', job, 'status')
  if status then redis.call('ZREM', ARGV[1] .. 'status:' .. status, id) end
  redis.call('DEL', job)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('SREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
end
return #ids
"""

# -- the webhook secret: mirapi:webhook:{jobs}:secret ---------------------------

# KEYS: secret. ARGV: a new secret, kept only when there is none.
WEBHOOK_SECRET = """
local secret = redis.call('GET', KEYS[1])
if secret then return secret end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


def _stored_job(data: bytes | str, owner: bytes | str, due_at: bytes | str) -> Job:
    """A job as a script returns it: the lease fields are the truth, not the blob's copy."""
    return decode_job(as_bytes(data)).with_(
        owner=text(owner) or None, due_at=number(due_at) if due_at else None
    )


class RedisJobs(RedisBase):
    def __init__(self) -> None:
        super().__init__()
        client = self._client
        self._job_save = client.register_script(JOB_SAVE)
        self._job_claim = client.register_script(JOB_CLAIM)
        self._job_renew = client.register_script(JOB_RENEW)
        self._job_list = client.register_script(JOB_LIST)
        self._job_get = client.register_script(JOB_GET)
        self._job_purge = client.register_script(JOB_PURGE)
        self._webhook_secret = client.register_script(WEBHOOK_SECRET)
        self._jobs_prefix = f"{self._prefix}jobs:{JOBS_TAG}:"
        # due, created, active, finished: the order every job script takes them in.
        self._jobs_keys = [
            f"{self._jobs_prefix}{name}" for name in ("due", "created", "active", "finished")
        ]
        self._secret_key = f"{self._prefix}webhook:{JOBS_TAG}:secret"

    async def job_add(self, job: Job) -> None:
        if self._replica_acks and isinstance(self._client, aioredis.Redis):
            await self._add_replicated(self._client, job)
        else:
            await self._write_job(job, None)

    async def job_claim(self, owner: str, lease: float) -> Job | None:
        now = self._clock.now()
        until = now + lease
        reply = await self._call(
            self._job_claim(
                keys=self._jobs_keys[:1], args=[self._jobs_prefix, repr(now), repr(until), owner]
            )
        )
        if reply is None:
            return None
        return decode_job(as_bytes(reply[1])).with_(due_at=until, owner=owner)

    async def job_renew(self, job_id: str, owner: str, lease: float) -> bool:
        until = self._clock.now() + lease
        renewed = await self._call(
            self._job_renew(
                keys=self._jobs_keys[:1], args=[self._jobs_prefix, job_id, owner, repr(until)]
            )
        )
        return bool(int(renewed))

    async def job_save(self, job: Job, owner: str | None) -> bool:
        return await self._write_job(job, owner)

    async def job_get(self, job_id: str) -> Job | None:
        reply = await self._call(
            self._job_get(keys=self._jobs_keys[:1], args=[self._jobs_prefix, job_id])
        )
        return None if reply is None else _stored_job(*reply)

    async def job_list(self, status: str | None = None, limit: int = 100) -> list[Job]:
        listed = self._jobs_keys[1] if status is None else f"{self._jobs_prefix}status:{status}"
        flat = await self._call(
            self._job_list(keys=[self._jobs_keys[0], listed], args=[self._jobs_prefix, limit])
        )
        return [_stored_job(*flat[i : i + 3]) for i in range(0, len(flat), 3)]

    async def job_depth(self) -> int:
        return int(await self._call(self._client.scard(self._jobs_keys[2])))

    async def job_purge(self, finished_before: float) -> int:
        total = 0
        while True:
            removed = int(
                await self._call(
                    self._job_purge(
                        keys=self._jobs_keys,
                        args=[self._jobs_prefix, repr(finished_before), PURGE_BATCH],
                    )
                )
            )
            total += removed
            if removed < PURGE_BATCH:
                return total

    async def webhook_secret(self, new: str) -> str:
        secret = await self._call(self._webhook_secret(keys=[self._secret_key], args=[new]))
        return text(secret)

    async def _write_job(self, job: Job, owner: str | None) -> bool:
        written = await self._call(
            self._job_save(keys=self._jobs_keys, args=self._save_args(job, owner))
        )
        return bool(int(written))

    async def _add_replicated(self, client: aioredis.Redis, job: Job) -> None:
        # One connection for both: WAIT counts the writes of its own connection.
        pipe = client.pipeline(transaction=False)
        await self._job_save(keys=self._jobs_keys, args=self._save_args(job, None), client=pipe)
        pipe.wait(self._replica_acks, REPLICA_WAIT_MS)
        await self._call(pipe.execute())

    def _save_args(self, job: Job, owner: str | None) -> list[str | bytes]:
        """JOB_SAVE's ARGV for `job`, written whole, kept only while `owner` holds it."""
        return [
            self._jobs_prefix,
            job.id,
            owner or "",
            encode_job(job.with_(owner=None)),
            "" if job.due_at is None else repr(job.due_at),
            job.status,
            repr(job.created_at),
            "" if job.finished_at is None else repr(job.finished_at),
            "1" if job.phase == "done" else "0",
        ]
