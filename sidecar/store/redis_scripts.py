"""The Lua scripts of the Redis store, as plain strings (loaded by `redis.py`).

Each multi-step operation of `RedisStore` is one of these scripts: atomic,
one round trip. Every key a script touches is passed in KEYS or, for the job
scripts, built from the prefix in ARGV[1] (always inside the `{jobs}` slot),
so the keys of one call share a hash tag and one Redis Cluster slot. Times
come in ARGV (the injected clock) and are compared with the stored ones;
expiries in ARGV are milliseconds, for garbage collection only.

The key layout (names under the namespace, `mirapi:` by default; see
`redis.py` for each key's fields):

    IDEM_CLAIM, IDEM_RENEW,       idem:{KEY}:lock, idem:{KEY}:rec,
    IDEM_FINISH, IDEM_WAIT_POLL   idem:{KEY}:res:TOKEN
    BREAKER_ADMIT, BREAKER_RECORD breaker:{HOST}
    RECORD_PUT, RECORD_DELETE,    KIND:{KIND}, KIND:{KIND}:version
    RECORDS_LOAD                  (KIND: routes, keys, secrets)
    JOB_SAVE, JOB_CLAIM,          jobs:{jobs}:due, :created, :active, :finished
    JOB_RENEW, JOB_LIST,          (in KEYS); jobs:{jobs}:job:ID and
    JOB_GET, JOB_PURGE            jobs:{jobs}:status:S (built from the prefix)
    WEBHOOK_SECRET                webhook:{jobs}:secret
    EVENTS_ADD                    events:{events}
    REQUESTS_PUT                  requests:{requests} (in KEYS) and
                                  requests:{requests}:ID (built from the prefix)
    RATE_TAKE                     rate:{KEY}

Each script's own KEYS and ARGV are in the comment above it.
"""

# -- idempotency: mirapi:idem:{KEY}:lock, :rec, :res:TOKEN ---------------------

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

# -- circuit breaker: mirapi:breaker:{HOST} ------------------------------------

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

# -- named records: mirapi:KIND:{KIND} and its :version -------------------------

# KEYS: records hash, version. ARGV: name, data, replace ('1'/'0'), version seed.
RECORD_PUT = """
if ARGV[3] ~= '1' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[4]) end
redis.call('INCR', KEYS[2])
return 1
"""

# KEYS: records hash, version. ARGV: name, version seed.
RECORD_DELETE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[2]) end
redis.call('INCR', KEYS[2])
return 1
"""

# KEYS: records hash, version. The version and the records of one moment.
RECORDS_LOAD = """
return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}
"""

# -- jobs: mirapi:jobs:{jobs}:* (KEYS: due, created, active, finished) ----------

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

# -- observability: mirapi:events:{events}, mirapi:requests:{requests}, mirapi:rate:{KEY}

# KEYS: the event stream. ARGV: the most entries kept, then each event's data.
# Approximate trimming on each XADD keeps a big batch bounded cheaply; the
# exact trim at the end keeps the log at exactly its bound (removing the few
# oldest entries of one stream node: cheap, once a batch).
EVENTS_ADD = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[1])
return #ARGV - 1
"""

# KEYS: the index (zset: request id -> write order). ARGV: the record key
# prefix, the most records kept, the expiry (ms), then id, data for each record.
# A record's order is one past the highest in the index, so a replaced record
# becomes the newest and the order needs no counter of its own; the records
# past the bound are deleted with their index entries. The expiry is only a
# safety net for an install that stops writing.
REQUESTS_PUT = """
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local order = 0
if top[2] then order = tonumber(top[2]) end
for i = 4, #ARGV, 2 do
  order = order + 1
  redis.call('SET', ARGV[1] .. ARGV[i], ARGV[i + 1], 'PX', ARGV[3])
  redis.call('ZADD', KEYS[1], order, ARGV[i])
end
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if extra > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, extra - 1)) do
    redis.call('DEL', ARGV[1] .. id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: the bucket (hash: tokens, updated_at). ARGV: now, limit, period,
# epsilon, expiry (ms: past the time a drained bucket is full again).
# {allowed (1/0), tokens left}. The steps of `base.take_token`, in the same
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
