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

from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, RedisError

from sidecar.clock import Clock
from sidecar.store.base import StoreHealth
from sidecar.store.redis.breaker import RedisBreakers
from sidecar.store.redis.budgets import RedisBudgets
from sidecar.store.redis.cache import RedisCache
from sidecar.store.redis.client import GC_GRACE, hash_tag, millis, safe_cause
from sidecar.store.redis.connect import client_for
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
    """The `Store` on Redis, shared by every sidecar pointed at it.

    One server, a Redis Cluster or a Sentinel-managed primary (`connect`);
    the key layout is cluster-safe, one hash slot per operation.
    """

    def __init__(self, url: str, clock: Clock, namespace: str = "mirapi") -> None:
        self._clock = clock
        self._prefix = f"{namespace}:"
        connected = client_for(url)
        self._client = connected.client
        self._sentinel = connected.sentinel
        # On Sentinel, an accepted job waits (bounded) for a replica's copy:
        # the replica is what a failover promotes.
        self._replica_acks = 1 if connected.topology == "sentinel" else 0
        self._health = StoreHealth("redis", ok=False, reason="redis not connected yet")
        super().__init__()

    async def open(self) -> None:
        await self.ping()

    async def close(self) -> None:
        clients = [self._client, *(self._sentinel.sentinels if self._sentinel else [])]
        for client in clients:
            try:
                await client.aclose()
            except (RedisError, OSError):
                pass  # closing a connection that is already gone is not an error

    def health(self) -> StoreHealth:
        return self._health

    async def ping(self) -> None:
        """PING Redis (a cluster: every primary); StoreUnavailable when it does not answer.

        A cluster counts as answering only when every primary says
        `cluster_state:ok`: a sidecar comes back when the cluster is whole.
        """
        if isinstance(self._client, RedisCluster):
            await self._call(self._cluster_whole(self._client))
        else:
            await self._call(self._client.ping())

    @staticmethod
    async def _cluster_whole(client: RedisCluster) -> None:
        # A PING of one node says little: a cluster missing a node refuses
        # the keys of its slots (or all keys), so ask every primary.
        states: Any = await client.cluster_info(target_nodes=RedisCluster.PRIMARIES)
        replies = list(states.values()) if _per_node(states) else [states]
        for info in replies:
            if not isinstance(info, dict) or info.get("cluster_state") != "ok":
                raise ClusterDownError("CLUSTERDOWN the cluster is down")


def _per_node(reply: dict[str, Any]) -> bool:
    """A command sent to several nodes answers {node name: reply}."""
    return bool(reply) and all(isinstance(value, dict) for value in reply.values())
