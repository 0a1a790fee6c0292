"""The Redis store: one state for every sidecar that shares the server (SPEC §7).

Keys, all under `mirapi:` (the namespace) and cluster-safe: the keys one
operation touches share a hash tag, so a Redis Cluster keeps them in one slot.

    mirapi:cache:{KEY}              string   StoredResponse.encode()
    mirapi:breaker:{HOST}           hash     state, failures, opened_at, probe_until
    mirapi:idem:{KEY}:lock          hash     token, fp, until, revealed
    mirapi:idem:{KEY}:rec           hash     fp, until, resp    (explicit keys' replay)
    mirapi:idem:{KEY}:res:TOKEN     hash     until, resp        (for the holder's waiters;
                                             no resp: nothing to share; written only
                                             when a claim was told TOKEN)
    mirapi:KIND:{KIND}              hash     NAME -> the record (KIND: routes, keys,
                                             secrets; each kind's own encoding)
    mirapi:KIND:{KIND}:version      string   bumped by every write of that kind
    mirapi:jobs:{jobs}:job:ID       hash     data (encode_job), owner, status
    mirapi:jobs:{jobs}:due          zset     ID -> due_at (absent: never due)
    mirapi:jobs:{jobs}:created      zset     ID -> created_at (every job, for listing)
    mirapi:jobs:{jobs}:status:S     zset     ID -> created_at (the jobs of status S)
    mirapi:jobs:{jobs}:active       set      IDs with work left (phase not done)
    mirapi:jobs:{jobs}:finished     zset     ID -> finished_at (phase done, for purge)
    mirapi:webhook:{jobs}:secret    string   the install's signing secret
    mirapi:events:{events}          stream   entries {e: event}; the entry id is the
                                             cursor (capped at EVENTS_MAX)
    mirapi:requests:{requests}      zset     request id -> write order (the newest
                                             REQUESTS_MAX)
    mirapi:requests:{requests}:ID   string   the request record of ID
    mirapi:stats:{stats}:HOUR       hash     counter name -> count, for one hour
    mirapi:rate:{KEY}               hash     tokens, updated_at (a token bucket)

Jobs are one queue in one slot (`{jobs}`), so each job call is one atomic
script; the scripts build the job and status keys from the prefix they are
given, always inside that slot. A claim takes the first member of `due` with
a score <= now and moves its score to now + lease (a lease, never a pop: a
claimer that dies lets the job come due again for any sidecar). The `due`
score and the hash's `owner` field are the truth for `due_at` and `owner`
(Lua never parses the JSON in `data`); Python rebuilds the Job with them.

Routes, jobs and the webhook secret are durable, not cached: they never
expire (with an eviction
policy, use a `volatile-*` one so Redis evicts only keys with a TTL, which
every other key has; and persistence, AOF, for jobs to survive a Redis
restart). A put or a delete is one script that also bumps the
version, so a sidecar polling the version never misses a write. A missing
version key (a new server, or a flushed one) is started from the wall
clock in microseconds rather than 0, so a flush does not bring back a
version a sidecar already holds, and it sees the change.

Observability: events are one stream shared by every sidecar, so its
entry ids (server time, then a sequence) order all sidecars' events and
serve as cursors; one script appends a batch and trims the stream. Request
records are strings under one tag with a zset index that one script keeps
at REQUESTS_MAX (deleting the records it drops); each also has a long
expiry, a safety net for an install that stops writing. Stats are a hash
per hour bucket (HINCRBY in one MULTI, expiring after STATS_KEEP_HOURS),
read with one pipeline of HGETALL over the hours of `stats_window`. A rate
bucket is one script on one hash; it expires once it would be full again.

A key (or host) that is empty, long, not printable ASCII, holds a brace or
starts with `sha256:` is replaced by `sha256:` + its hex digest, so the tag is
always well formed and never collides with a plain key.

Expiry is logical: the injected clock's `now` goes to every script as an
argument and is compared with the times stored in the values, so a fake
clock drives Redis exactly as it drives the embedded store. Each key also
gets a server-side expiry a little past its logical one, for garbage
collection only. Every multi-step operation is one Lua script (atomic, one
round trip; the scripts are in `redis_scripts`); every redis or socket
exception becomes `StoreUnavailable` with a short cause and never the URL
(it may hold a password).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    NoPermissionError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
)

from sidecar.clock import Clock
from sidecar.errors import StoreUnavailable
from sidecar.jobs.model import Job, decode_job, encode_job
from sidecar.store import redis_scripts as scripts
from sidecar.store.base import (
    EVENTS_MAX,
    RATE_EPSILON,
    RECORD_KINDS,
    REQUESTS_MAX,
    STATS_KEEP_HOURS,
    Admission,
    BreakerState,
    BreakerStatus,
    Claim,
    ClaimOutcome,
    RateDecision,
    StoredResponse,
    StoreHealth,
    WaitOutcome,
    WaitResult,
    check_counts,
    check_rate,
    stats_window,
)

T = TypeVar("T")

#: Server-side expiry beyond the logical one: only garbage collection, so a
#: few seconds of clock skew between sidecars never loses a live entry.
GC_GRACE = 5.0
#: How long a finished holder's response waits for its waiters (clock seconds).
RESULT_TTL = 60.0
#: Breakers have no logical expiry; one left alone this long is forgotten (closed).
BREAKER_IDLE_TTL = 24 * 3600.0
#: idem_wait polls this often, backing off from the first to the last.
POLL_FIRST, POLL_MAX = 0.01, 0.1
HASHED_PREFIX = "sha256:"
MAX_PLAIN_KEY = 200
#: The tag of every job key (and the webhook secret): one queue, one slot.
JOBS_TAG = "{jobs}"
#: Finished jobs removed per purge script call (bounds the time Redis is busy).
PURGE_BATCH = 500
#: Events or request records sent per script call (bounds one call's size).
WRITE_BATCH = 500
#: The safety-net expiry of request records and their index.
REQUEST_TTL = 7 * 24 * 3600.0
#: A stream entry id: milliseconds, a dash, a sequence number.
_STREAM_ID = re.compile(r"[0-9]+-[0-9]+", re.ASCII)


def hash_tag(key: str) -> str:
    """`key` as the inside of a `{...}` hash tag: itself when plain, else its digest."""
    plain = (
        0 < len(key) <= MAX_PLAIN_KEY
        and key.isascii()
        and key.isprintable()
        and "{" not in key
        and "}" not in key
        and not key.startswith(HASHED_PREFIX)
    )
    if plain:
        return key
    return HASHED_PREFIX + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def millis(seconds: float) -> int:
    """A server-side expiry in whole milliseconds, never zero (PX rejects 0)."""
    return max(1, math.ceil(seconds * 1000))


def safe_cause(exc: BaseException) -> str:
    """A short reason for `exc` that is safe to show: never a URL or a message echo."""
    # redis-py may wrap the telling error (an AuthenticationError, say) in a
    # ConnectionError: look down the chain before settling on a generic word.
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and len(chain) < 5:
        chain.append(link)
        link = link.__cause__ or link.__context__
    for error in chain:
        specific = _specific_cause(error)
        if specific is not None:
            return specific
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "no such file" in text:
        return "socket not found"
    return "connection failed"


def _specific_cause(exc: BaseException) -> str | None:
    if isinstance(exc, AuthenticationError | NoPermissionError):
        return "authentication failed"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, BusyLoadingError):
        return "server is loading its data"
    if isinstance(exc, ReadOnlyError):
        return "server is read-only"
    if isinstance(exc, ResponseError):
        # Redis error replies start with an upper-case code (WRONGPASS, OOM, ...).
        code = str(exc).split(" ", 1)[0]
        if code in ("WRONGPASS", "NOAUTH"):
            return "authentication failed"
        return f"server error {code}" if code.isupper() and code.isalpha() else "server error"
    return None


def _version_seed() -> int:
    """Where a missing record version starts: wall-clock microseconds, never repeated."""
    # Real time, not the injected clock: this orders versions, it expires nothing.
    return time.time_ns() // 1000


def _stored_job(data: bytes | str, owner: bytes | str, due_at: bytes | str) -> Job:
    """A job as a script returns it: the lease fields are the truth, not the blob's copy."""
    return decode_job(_bytes(data)).with_(
        owner=_text(owner) or None, due_at=_number(due_at) if due_at else None
    )


def _stream_events(
    entries: list[tuple[bytes | str | None, dict[bytes | str, bytes | str] | None]] | None,
) -> list[tuple[str, bytes]]:
    """(cursor, data) of stream entries as XRANGE replies them (an entry without data: skipped)."""
    events: list[tuple[str, bytes]] = []
    for entry_id, fields in entries or ():
        data = None if fields is None else fields.get(b"e")
        if entry_id is not None and data is not None:
            events.append((_text(entry_id), _bytes(data)))
    return events


def _number(raw: bytes | str | int | float) -> float:
    return float(raw.decode() if isinstance(raw, bytes) else raw)


def _text(raw: bytes | str) -> str:
    # The client never decodes replies (bodies are bytes); typeshed allows both.
    return raw.decode() if isinstance(raw, bytes) else raw


def _bytes(raw: bytes | str) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode()


class RedisStore:
    """The `Store` on one Redis server, shared by every sidecar pointed at it.

    The client speaks to a single server (or a proxy in front of a cluster);
    the key layout is already cluster-safe, one hash slot per operation.
    """

    def __init__(self, url: str, clock: Clock, namespace: str = "mirapi") -> None:
        self._clock = clock
        self._prefix = f"{namespace}:"
        try:
            self._client: aioredis.Redis = aioredis.from_url(
                url,
                # We fall back to local state rather than hang: fail fast, and
                # retry only once, so a connection the server closed (a
                # restart) is replaced without the caller seeing it.
                socket_connect_timeout=1.0,
                socket_timeout=2.0,
                health_check_interval=15,
                retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
            )
        except (ValueError, RedisError):
            # The parser's message may quote the URL; say only what kind of problem.
            raise ValueError("the redis URL is not valid (value not shown)") from None
        self._health = StoreHealth("redis", ok=False, reason="redis not connected yet")
        client = self._client
        self._claim = client.register_script(scripts.IDEM_CLAIM)
        self._renew = client.register_script(scripts.IDEM_RENEW)
        self._finish = client.register_script(scripts.IDEM_FINISH)
        self._wait_poll = client.register_script(scripts.IDEM_WAIT_POLL)
        self._admit = client.register_script(scripts.BREAKER_ADMIT)
        self._record = client.register_script(scripts.BREAKER_RECORD)
        self._record_put = client.register_script(scripts.RECORD_PUT)
        self._record_delete = client.register_script(scripts.RECORD_DELETE)
        self._records_load = client.register_script(scripts.RECORDS_LOAD)
        # Per kind: its hash and version, in one slot ({KIND}) read and written together.
        self._record_keys = {
            kind: [f"{self._prefix}{kind}:{{{kind}}}", f"{self._prefix}{kind}:{{{kind}}}:version"]
            for kind in RECORD_KINDS
        }
        self._job_save = client.register_script(scripts.JOB_SAVE)
        self._job_claim = client.register_script(scripts.JOB_CLAIM)
        self._job_renew = client.register_script(scripts.JOB_RENEW)
        self._job_list = client.register_script(scripts.JOB_LIST)
        self._job_get = client.register_script(scripts.JOB_GET)
        self._job_purge = client.register_script(scripts.JOB_PURGE)
        self._webhook_secret = client.register_script(scripts.WEBHOOK_SECRET)
        self._jobs_prefix = f"{self._prefix}jobs:{JOBS_TAG}:"
        # due, created, active, finished: the order every job script takes them in.
        self._jobs_keys = [
            f"{self._jobs_prefix}{name}" for name in ("due", "created", "active", "finished")
        ]
        self._secret_key = f"{self._prefix}webhook:{JOBS_TAG}:secret"
        self._events_add = client.register_script(scripts.EVENTS_ADD)
        self._requests_put = client.register_script(scripts.REQUESTS_PUT)
        self._rate_take = client.register_script(scripts.RATE_TAKE)
        self._events_key = f"{self._prefix}events:{{events}}"
        self._requests_index = f"{self._prefix}requests:{{requests}}"
        self._requests_prefix = f"{self._requests_index}:"
        self._stats_prefix = f"{self._prefix}stats:{{stats}}:"

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        await self.ping()

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except (RedisError, OSError):
            pass  # closing a connection that is already gone is not an error

    def health(self) -> StoreHealth:
        return self._health

    async def ping(self) -> None:
        """One PING; raises StoreUnavailable when Redis does not answer."""
        await self._call(self._client.ping())

    # -- smart cache -------------------------------------------------------

    async def cache_get(self, key: str) -> StoredResponse | None:
        data = await self._call(self._client.get(self._key("cache", key)))
        if data is None:
            return None
        entry = StoredResponse.decode(_bytes(data))
        return entry if entry.expires_at > self._clock.now() else None

    async def cache_put(self, key: str, entry: StoredResponse) -> None:
        ttl = entry.expires_at - self._clock.now()
        if ttl <= 0:
            return
        # Redis bounds its memory itself (maxmemory and an eviction policy).
        await self._call(
            self._client.set(self._key("cache", key), entry.encode(), px=millis(ttl + GC_GRACE))
        )

    # -- circuit breaker ---------------------------------------------------

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
            return Admission(allowed=False, retry_after=_number(retry_after))
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
            BreakerState(state.decode()), int(failures), _number(opened_at), bool(int(changed))
        )

    async def breaker_status(self, host: str) -> BreakerStatus:
        state, failures, opened_at = await self._call(
            self._client.hmget(self._key("breaker", host), ["state", "failures", "opened_at"])
        )
        if state is None:
            return BreakerStatus(BreakerState.CLOSED)
        return BreakerStatus(
            BreakerState(_text(state)), int(failures or 0), _number(opened_at or 0)
        )

    # -- idempotency ---------------------------------------------------------

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

    # -- named records -----------------------------------------------------------

    async def records_load(self, kind: str) -> tuple[int, dict[str, bytes]]:
        version, flat = await self._call(self._records_load(keys=self._record_keys[kind]))
        records = {_text(flat[i]): _bytes(flat[i + 1]) for i in range(0, len(flat), 2)}
        return int(version), records

    async def records_version(self, kind: str) -> int:
        version = await self._call(self._client.get(self._record_keys[kind][1]))
        return 0 if version is None else int(version)

    async def record_put(self, kind: str, name: str, data: bytes, replace: bool) -> bool:
        written = await self._call(
            self._record_put(
                keys=self._record_keys[kind],
                args=[name, data, "1" if replace else "0", _version_seed()],
            )
        )
        return bool(int(written))

    async def record_delete(self, kind: str, name: str) -> bool:
        removed = await self._call(
            self._record_delete(keys=self._record_keys[kind], args=[name, _version_seed()])
        )
        return bool(int(removed))

    # -- jobs ------------------------------------------------------------------

    async def job_add(self, job: Job) -> None:
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
        return decode_job(_bytes(reply[1])).with_(due_at=until, owner=owner)

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
        return _text(secret)

    async def _write_job(self, job: Job, owner: str | None) -> bool:
        written = await self._call(
            self._job_save(
                keys=self._jobs_keys,
                args=[
                    self._jobs_prefix,
                    job.id,
                    owner or "",
                    encode_job(job.with_(owner=None)),
                    "" if job.due_at is None else repr(job.due_at),
                    job.status,
                    repr(job.created_at),
                    "" if job.finished_at is None else repr(job.finished_at),
                    "1" if job.phase == "done" else "0",
                ],
            )
        )
        return bool(int(written))

    # -- observability ---------------------------------------------------------

    async def events_add(self, items: Sequence[bytes]) -> None:
        for start in range(0, len(items), WRITE_BATCH):
            chunk = items[start : start + WRITE_BATCH]
            await self._call(self._events_add(keys=[self._events_key], args=[EVENTS_MAX, *chunk]))

    async def events_read(self, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        if after is not None and not _STREAM_ID.fullmatch(after):
            raise ValueError("not an event cursor of this store")
        if limit <= 0:
            return []
        if after is None:
            newest = await self._call(self._client.xrevrange(self._events_key, count=limit))
            return _stream_events(newest)[::-1]
        # "(" makes the start exclusive: the events after the cursor's.
        later = await self._call(
            self._client.xrange(self._events_key, min=f"({after}", count=limit)
        )
        return _stream_events(later)

    async def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None:
        head: list[str | bytes | int] = [self._requests_prefix, REQUESTS_MAX, millis(REQUEST_TTL)]
        for start in range(0, len(items), WRITE_BATCH):
            flat = list(head)
            for request_id, data in items[start : start + WRITE_BATCH]:
                flat += (request_id, data)
            await self._call(self._requests_put(keys=[self._requests_index], args=flat))

    async def request_get(self, request_id: str) -> bytes | None:
        data = await self._call(self._client.get(self._requests_prefix + request_id))
        return None if data is None else _bytes(data)

    async def stats_add(self, hour: int, counts: Mapping[str, int]) -> None:
        kept = check_counts(counts)
        if not kept:
            return
        key = f"{self._stats_prefix}{hour}"
        # MULTI: the counters of one flush land together or not at all.
        pipe = self._client.pipeline(transaction=True)
        for name, value in kept.items():
            pipe.hincrby(key, name, value)
        pipe.expire(key, (STATS_KEEP_HOURS + 1) * 3600)
        await self._call(pipe.execute())

    async def stats_read(self, since_hour: int) -> dict[str, int]:
        first, last = stats_window(since_hour, self._clock.now())
        pipe = self._client.pipeline(transaction=False)
        for hour in range(first, last + 1):
            pipe.hgetall(f"{self._stats_prefix}{hour}")
        buckets = await self._call(pipe.execute())
        totals: dict[str, int] = {}
        for bucket in buckets:
            for name, value in bucket.items():
                counter = _text(name)
                totals[counter] = totals.get(counter, 0) + int(value)
        return totals

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
        return RateDecision.judge(bool(int(allowed)), _number(tokens), limit, period)

    # -- plumbing ------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{{{hash_tag(name)}}}"

    def _idem_key(self, key: str, part: str) -> str:
        return f"{self._key('idem', key)}:{part}"

    async def _call(self, command: Awaitable[T]) -> T:
        """Await one Redis call; any failure becomes StoreUnavailable with a safe cause."""
        try:
            result = await command
        except (RedisError, OSError) as exc:
            reason = f"redis unreachable: {safe_cause(exc)}"
            self._health = StoreHealth("redis", ok=False, reason=reason)
            raise StoreUnavailable(reason) from exc
        if not self._health.ok:
            self._health = _HEALTHY
        return result


_HEALTHY = StoreHealth("redis")
