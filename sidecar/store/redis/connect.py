"""From a `--redis` URL to a client: one server, a Redis Cluster, or a Sentinel primary.

What each URL names is `sidecar.redis_url`; this builds the redis-py
client for it. The user and password are the Redis servers' (the Sentinels
are asked without them). No error ever quotes the URL: it may hold a
password.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from sidecar.redis_url import INVALID, Endpoints, Topology, parse_url

#: We fall back to local state rather than hang: fail fast.
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 2.0


@dataclass
class Connected:
    """A client and what it talks to; `sentinel` is closed along with the client."""

    client: aioredis.Redis | RedisCluster
    topology: Topology
    sentinel: Sentinel | None = None


def client_for(url: str) -> Connected:
    """A client for `url` (not yet connected); ValueError when the URL is not valid."""
    endpoints = parse_url(url)
    try:
        if endpoints.topology == "cluster":
            return Connected(_cluster_client(endpoints), "cluster")
        if endpoints.topology == "sentinel":
            sentinel = _sentinel(endpoints)
            primary = sentinel.master_for(endpoints.service, **_server_options(endpoints))
            return Connected(primary, "sentinel", sentinel)
        return Connected(aioredis.from_url(url, **_server_options(None)), "server")
    except (ValueError, RedisError):
        # The parser's message may quote the URL; say only what kind of problem.
        raise ValueError(INVALID) from None


def _server_options(endpoints: Endpoints | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": READ_TIMEOUT,
        "health_check_interval": 15,
        # Retry only once, so a connection the server closed (a restart, a
        # failover) is replaced without the caller seeing it.
        "retry": Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
    }
    if endpoints is not None:
        options.update(username=endpoints.username, password=endpoints.password, db=endpoints.db)
    return options


def _cluster_client(endpoints: Endpoints) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in endpoints.nodes],
        username=endpoints.username,
        password=endpoints.password,
        ssl=endpoints.tls,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=READ_TIMEOUT,
        # A moved slot or a failover is retried a little (the client refreshes
        # its slot map in between); past that the store falls back to local.
        retry=Retry(
            ExponentialBackoff(cap=0.2, base=0.02),
            2,
            supported_errors=(ConnectionError, TimeoutError),
        ),
        # Our keys name their own slots; every seed given stays a seed.
        dynamic_startup_nodes=False,
    )


def _sentinel(endpoints: Endpoints) -> Sentinel:
    return Sentinel(
        list(endpoints.nodes),
        sentinel_kwargs={
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": READ_TIMEOUT,
        },
    )
