"""The Redis store: one state for every sidecar that shares the server (SPEC §7).

One mixin per capability over `client.RedisBase`, one module each (`cache`,
`breaker`, `idempotency`, `rate`, `records`, `jobs`, `logs`, `fleet`), with its keys
documented and its Lua scripts beside it; `RedisStore` is all of them. This
package is the only importer of `redis` (ruff's banned-api rule).

Keys, all under `mirapi:` (the namespace) and cluster-safe: the keys one
operation touches share a hash tag, so a Redis Cluster keeps them in one
slot (`mirapi:cache:{KEY}`, `mirapi:breaker:{HOST}`, `mirapi:idem:{KEY}:*`,
`mirapi:rate:{KEY}`, `mirapi:KIND:{KIND}`, `mirapi:jobs:{jobs}:*`,
`mirapi:events:{events}`, `mirapi:requests:{requests}`, `mirapi:stats:{stats}:*`,
`mirapi:fleet:{fleet}*`; the `mirapi:changes` pub/sub channel).

Expiry is logical: the injected clock's `now` goes to every script as an
argument and is compared with the times stored in the values, so a fake
clock drives Redis exactly as it drives the embedded store. Each key also
gets a server-side expiry a little past its logical one, for garbage
collection only (routes, jobs and the webhook secret never expire). Every
multi-step operation is one Lua script (atomic, one round trip).
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from sidecar.clock import Clock
from sidecar.store.base import StoreHealth
from sidecar.store.redis.breaker import RedisBreakers
from sidecar.store.redis.budgets import RedisBudgets
from sidecar.store.redis.cache import RedisCache
from sidecar.store.redis.client import GC_GRACE, hash_tag, millis, safe_cause
from sidecar.store.redis.fleet import RedisFleet
from sidecar.store.redis.idempotency import RESULT_TTL, RedisIdempotency
from sidecar.store.redis.jobs import RedisJobs
from sidecar.store.redis.logs import REQUEST_TTL, RedisLogs
from sidecar.store.redis.rate import RedisRates
from sidecar.store.redis.records import RedisRecords

__all__ = [
    "GC_GRACE",
    "REQUEST_TTL",
    "RESULT_TTL",
    "RedisStore",
    "hash_tag",
    "millis",
    "safe_cause",
]


class RedisStore(
    RedisCache,
    RedisBreakers,
    RedisIdempotency,
    RedisRates,
    RedisRecords,
    RedisJobs,
    RedisLogs,
    RedisFleet,
    RedisBudgets,
):
    """The `Store` on one Redis server, shared by every sidecar pointed at it.

    The client speaks to a single server (or a proxy in front of a cluster);
    the key layout is already cluster-safe, one hash slot per operation.
    """

    def __init__(self, url: str, clock: Clock, namespace: str = "mirapi") -> None:
        self._clock = clock
        self._prefix = f"{namespace}:"
        try:
            self._client = aioredis.from_url(
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
        super().__init__()

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
