"""What a `--redis` URL names: one server, a Redis Cluster, or a Sentinel primary.

    redis://  rediss://  unix://                 one server (left to redis-py)
    redis+cluster://[USER:PASS@]HOST:PORT[,HOST:PORT...]
    rediss+cluster://...                         a Redis Cluster, any node(s) as seeds
    redis+sentinel://[USER:PASS@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]
                                                 the primary Sentinel names SERVICE

A cluster's seeds default to port 6379, Sentinels to 26379. Pure (no redis
import): the config checks a URL with it when it is read, and the store
builds its client from what it says (sidecar.store.redis.connect). No
error ever quotes the URL: it may hold a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

Topology = Literal["server", "cluster", "sentinel"]

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
SENTINEL_SCHEME = "redis+sentinel"
SERVER_SCHEMES = ("redis", "rediss", "unix")
#: Every scheme `--redis` takes.
SCHEMES = (*SERVER_SCHEMES, *CLUSTER_SCHEMES, SENTINEL_SCHEME)
DEFAULT_PORT = {"cluster": 6379, "sentinel": 26379}

INVALID = "the redis URL is not valid (value not shown)"


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
        raise ValueError(INVALID)
    if scheme in SERVER_SCHEMES:
        return Endpoints("server", url=url)
    if "?" in rest or "#" in rest:
        raise ValueError(INVALID)
    userinfo, at, hosts_and_path = rest.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    hosts, _, path = hosts_and_path.partition("/")
    topology: Topology = "sentinel" if scheme == SENTINEL_SCHEME else "cluster"
    nodes = tuple(_host_port(part, DEFAULT_PORT[topology]) for part in hosts.split(","))
    if topology == "cluster":
        if path not in ("", "0"):
            raise ValueError(INVALID)  # a cluster has database 0 only
        return Endpoints(
            "cluster",
            nodes=nodes,
            tls=CLUSTER_SCHEMES[scheme],
            username=username,
            password=password,
        )
    service, _, db = path.partition("/")
    if not service or (db and not db.isdigit()):
        raise ValueError(INVALID)
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
            raise ValueError(INVALID)
        port_text = tail[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host or (port_text and not port_text.isdigit()):
        raise ValueError(INVALID)
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError(INVALID)
    return host, port
