"""From a `--redis` URL to a client: one server, a Redis Cluster, or a Sentinel primary.

    redis://  rediss://  unix://                 one server (redis-py's from_url)
    redis+cluster://[USER:PASS@]HOST:PORT[,HOST:PORT...]
    rediss+cluster://...                         a Redis Cluster, any node(s) as seeds
    redis+sentinel://[USER:PASS@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]
                                                 the primary Sentinel names SERVICE

A cluster's seeds default to port 6379, Sentinels to 26379. The user and
password are the Redis servers' (the Sentinels are asked without them).
Parsing is pure (`parse_url`); `client_for` builds the client. No error
ever quotes the URL: it may hold a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError

Topology = Literal["server", "cluster", "sentinel"]

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
SENTINEL_SCHEME = "redis+sentinel"
SERVER_SCHEMES = ("redis", "rediss", "unix")
#: Every scheme `--redis` takes.
SCHEMES = (*SERVER_SCHEMES, *CLUSTER_SCHEMES, SENTINEL_SCHEME)
DEFAULT_PORT = {"cluster": 6379, "sentinel": 26379}

#: We fall back to local state rather than hang: fail fast.
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 2.0

_INVALID = "the redis URL is not valid (value not shown)"


@dataclass(frozen=True)
class Endpoints:
    """What a cluster or Sentinel URL names; `url` is kept only for a single server."""

    topology: Topology
    url: str = ""
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    tls: bool = False
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


def parse_url(url: str) -> Endpoints:
    """The endpoints `url` names; ValueError (never quoting it) when it is not valid."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or not rest or scheme not in SCHEMES:
        raise ValueError(_INVALID)
    if scheme in SERVER_SCHEMES:
        return Endpoints("server", url=url)
    if "?" in rest or "#" in rest:
        raise ValueError(_INVALID)
    userinfo, at, hosts_and_path = rest.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    hosts, _, path = hosts_and_path.partition("/")
    topology: Topology = "sentinel" if scheme == SENTINEL_SCHEME else "cluster"
    nodes = tuple(_host_port(part, DEFAULT_PORT[topology]) for part in hosts.split(","))
    if topology == "cluster":
        if path not in ("", "0"):
            raise ValueError(_INVALID)  # a cluster has database 0 only
        return Endpoints(
            "cluster",
            nodes=nodes,
            tls=CLUSTER_SCHEMES[scheme],
            username=username,
            password=password,
        )
    service, _, db = path.partition("/")
    if not service or (db and not db.isdigit()):
        raise ValueError(_INVALID)
    return Endpoints(
        "sentinel",
        nodes=nodes,
        service=unquote(service),
        db=int(db or 0),
        username=username,
        password=password,
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None, unquote(password) if colon else None)


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`."""
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(_INVALID)
        port_text = tail[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host or (port_text and not port_text.isdigit()):
        raise ValueError(_INVALID)
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError(_INVALID)
    return host, port


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
        raise ValueError(_INVALID) from None


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
