"""What every capability of the Redis store shares: the client, keys, and errors.

Each capability is a mixin over `RedisBase` (one module each, with its Lua
scripts), registering its scripts in its `__init__` (cooperative: it calls
`super().__init__()`); `RedisStore` is all of them.

A key (or host) that is empty, long, not printable ASCII, holds a brace or
starts with `sha256:` is replaced by `sha256:` + its hex digest, so the tag is
always well formed and never collides with a plain key.

Every redis or socket exception becomes `StoreUnavailable` with a short
cause and never the URL (it may hold a password); so do the cluster
client's own "no node reachable" and "slot not covered" (not RedisErrors).
A cluster client's key-layout errors (keys in different slots) are bugs
and are raised as they are.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
)

from sidecar.clock import Clock
from sidecar.errors import StoreUnavailable
from sidecar.store.base import StoreHealth

T = TypeVar("T")

#: Server-side expiry beyond the logical one: only garbage collection, so a
#: few seconds of clock skew between sidecars never loses a live entry.
GC_GRACE = 5.0
HASHED_PREFIX = "sha256:"
MAX_PLAIN_KEY = 200

HEALTHY = StoreHealth("redis")


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
    if isinstance(exc, RedisClusterUnreachableError):
        return "no cluster node reachable"
    if isinstance(exc, SlotNotCoveredError):
        return "cluster slot not covered"
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


def number(raw: bytes | str | int | float) -> float:
    return float(raw.decode() if isinstance(raw, bytes) else raw)


def text(raw: bytes | str) -> str:
    # The client never decodes replies (bodies are bytes); typeshed allows both.
    return raw.decode() if isinstance(raw, bytes) else raw


def as_bytes(raw: bytes | str) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode()


class RedisBase:
    """The base of every Redis capability; the store sets these before `__init__`."""

    _client: aioredis.Redis | RedisCluster
    #: The Sentinels a `sentinel` store asks for its primary (else None).
    _sentinel: Sentinel | None
    #: Replicas an accepted job waits for (WAIT), 0 for none.
    _replica_acks: int
    _clock: Clock
    #: The namespace and a colon: "mirapi:".
    _prefix: str
    _health: StoreHealth

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{{{hash_tag(name)}}}"

    async def _call(self, command: Awaitable[T]) -> T:
        """Await one Redis call; any failure becomes StoreUnavailable with a safe cause."""
        try:
            result = await command
        except (RedisError, OSError, RedisClusterUnreachableError, SlotNotCoveredError) as exc:
            reason = f"redis unreachable: {safe_cause(exc)}"
            self._health = StoreHealth("redis", ok=False, reason=reason)
            raise StoreUnavailable(reason) from exc
        if not self._health.ok:
            self._health = HEALTHY
        return result
