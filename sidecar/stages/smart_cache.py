"""The smart cache: yesterday's good answer beats today's outage (SPEC §2.6).

With `X-Smart-Cache: TTL`, every 2xx answer is kept for TTL seconds (never
an error, never a 206 part). When the upstream still fails after retries,
failover and the deadline (an error raised as 502 upstream_unreachable, 504
upstream_timeout / deadline_exceeded or 503 circuit_open, or an answer of
5xx or 429), a kept entry is answered instead with `X-Rescued: cache`, an
`Age` header and an RFC 9211 `Cache-Status`:

    Cache-Status: mirapi; fwd=request; fwd-status=503; ttl=240; detail=rescue

With `; serve-fresh`, a kept entry is answered at once without calling the
upstream (`Cache-Status: mirapi; hit; ttl=240`). That is a cache hit, not a
rescue, so it carries no `X-Rescued`.

An entry is usable while it is younger than both the TTL it was stored with
and the TTL of the request reading it: a caller asking for `1m` never gets
an answer an hour old.

The key is SHA-256 over the client id, method, primary URL (query
included), a hash of the body and a hash of the request's credentials
(`Authorization` and the other headers that carry one, `Cookie`,
`X-Api-Key`, the MirApi secret headers), so one caller never sees another's
data. `Set-Cookie` is never kept: a session handed out once must not be
handed out again. The store failing never fails the request: without it the
request goes on uncached.

A streamed body still streams: it is copied on its way to the client and
kept only once it ended cleanly within `max_entry_bytes`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable

from sidecar.clock import Clock
from sidecar.errors import (
    CircuitOpen,
    GatewayTimeout,
    StoreUnavailable,
    UpstreamFailure,
    UpstreamUnreachable,
)
from sidecar.exchange import BodyStream, Exchange, Headers, Next, Response
from sidecar.headers import HOP_BY_HOP
from sidecar.policy import CachePolicy
from sidecar.store.cache import CacheStore, StoredResponse

log = logging.getLogger(__name__)

#: Request headers that say who is calling; their values are part of the key.
#: Not X-Proxy-Master-Key: a passphrase is guessable, and a fast hash of it in
#: a stored key would let whoever reads the store skip scrypt's cost.
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "x-identity-key",
        "x-proxy-secret",
    }
)

#: Response headers never kept: the hop's own, a session cookie, and the
#: upstream's echo of a request id (each answer carries its own).
NOT_KEPT = HOP_BY_HOP | {"set-cookie", "x-request-id"}

#: Errors that mean the upstream failed, after every retry and failover.
UPSTREAM_ERRORS = (UpstreamUnreachable, GatewayTimeout, CircuitOpen, UpstreamFailure)


def cache_key(
    client_id: str, method: str, url: str, body: bytes, credentials: list[tuple[str, str]]
) -> str:
    """SHA-256 over length-prefixed parts, hex: one key per caller and request."""
    credential_parts = [part.encode() for pair in credentials for part in pair]
    parts = (
        client_id.encode(),
        method.encode(),
        url.encode(),
        hashlib.sha256(body).digest(),
        hashlib.sha256(_framed(credential_parts)).digest(),
    )
    return hashlib.sha256(_framed(parts)).hexdigest()


def _framed(parts: Iterable[bytes]) -> bytes:
    # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def exchange_key(exchange: Exchange) -> str:
    """The cache key of `exchange` (see `cache_key`)."""
    credentials = [(name, value) for name, value in exchange.headers if name in CREDENTIAL_HEADERS]
    # Header order must not matter, only which credentials were sent.
    credentials.sort()
    return cache_key(
        exchange.client_id, exchange.method, exchange.targets[0], exchange.body, credentials
    )


def is_failure(status: int) -> bool:
    """An answer the cache may replace: a 5xx or a 429."""
    return status >= 500 or status == 429


def is_storable(status: int) -> bool:
    """Only whole successes are kept: 2xx, but not a 206 part (Range is not in the key)."""
    return 200 <= status < 300 and status != 206


def kept_headers(headers: Headers) -> tuple[tuple[str, str], ...]:
    """The response headers worth keeping with an entry (see NOT_KEPT)."""
    return tuple((name, value) for name, value in headers if name not in NOT_KEPT)


class SmartCache:
    """Keeps 2xx answers; answers from them when the upstream fails (or while fresh)."""

    def __init__(self, store: CacheStore, clock: Clock, max_entry_bytes: int) -> None:
        self._store = store
        self._clock = clock
        self._max_entry_bytes = max_entry_bytes

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        cache = exchange.policy.smart_cache
        if cache is None:
            return await call_next(exchange)
        key = exchange_key(exchange)
        if cache.serve_fresh:
            entry = await self._usable_entry(key, cache)
            if entry is not None:
                return self._answer(entry, _hit_status(self._remaining(entry, cache)))
        try:
            response = await call_next(exchange)
        except UPSTREAM_ERRORS:
            rescued = await self._rescue(exchange, key, cache, upstream_status=None)
            if rescued is None:
                raise
            return rescued
        if is_failure(response.status):
            rescued = await self._rescue(exchange, key, cache, response.status)
            if rescued is None:
                return response
            await response.discard()
            return rescued
        if is_storable(response.status):
            await self._keep(key, cache, response)
        return response

    async def _rescue(
        self, exchange: Exchange, key: str, cache: CachePolicy, upstream_status: int | None
    ) -> Response | None:
        entry = await self._usable_entry(key, cache)
        if entry is None:
            return None
        exchange.rescue = "cache"
        status = _rescue_status(upstream_status, self._remaining(entry, cache))
        return self._answer(entry, status)

    def _answer(self, entry: StoredResponse, cache_status: str) -> Response:
        headers: Headers = [(name, value) for name, value in entry.headers if name != "age"]
        headers.append(("age", str(self._age(entry))))
        headers.append(("cache-status", cache_status))
        return Response(entry.status, headers, body=entry.body)

    async def _keep(self, key: str, cache: CachePolicy, response: Response) -> None:
        """Keep `response` under `key`; a streamed body once it has ended cleanly."""
        now = self._clock.now()
        status, headers = response.status, kept_headers(response.headers)

        async def keep_body(body: bytes) -> None:
            await self._put(key, StoredResponse(status, headers, body, now, now + cache.ttl))

        if response.stream is None:
            if len(response.body) <= self._max_entry_bytes:
                await keep_body(response.body)
            return
        tee = _tee(response.stream, self._max_entry_bytes, keep_body)
        upstream_close = response.close

        async def close() -> None:
            try:
                await tee.aclose()
            finally:
                if upstream_close is not None:
                    await upstream_close()

        response.stream = tee
        response.close = close

    async def _usable_entry(self, key: str, cache: CachePolicy) -> StoredResponse | None:
        try:
            entry = await self._store.cache_get(key)
        except StoreUnavailable:
            log.warning("smart cache lookup skipped: the store did not answer")
            return None
        if entry is None or self._remaining(entry, cache) <= 0:
            return None
        return entry

    async def _put(self, key: str, entry: StoredResponse) -> None:
        try:
            await self._store.cache_put(key, entry)
        except StoreUnavailable:
            log.warning("smart cache entry not kept: the store did not answer")

    def _remaining(self, entry: StoredResponse, cache: CachePolicy) -> float:
        """Seconds the entry stays usable for this request."""
        return min(entry.expires_at, entry.stored_at + cache.ttl) - self._clock.now()

    def _age(self, entry: StoredResponse) -> int:
        """RFC 9111 §4.2.3, simplified: the upstream's own Age plus our time held."""
        upstream_age = 0
        for name, value in entry.headers:
            if name == "age" and value.strip().isascii() and value.strip().isdigit():
                upstream_age = int(value)
        return upstream_age + max(0, int(self._clock.now() - entry.stored_at))


async def _tee(
    stream: BodyStream, limit: int, keep_body: Callable[[bytes], Awaitable[None]]
) -> AsyncGenerator[bytes, None]:
    """`stream` passed through chunk by chunk; its copy kept when it ends cleanly.

    Past `limit` bytes the copy is dropped and the rest only passes through.
    A stream that breaks raises on, and one the client abandons is closed
    at its `yield`: neither reaches `keep_body`.
    """
    chunks: list[bytes] | None = []
    size = 0
    async for chunk in stream:
        if chunks is not None:
            size += len(chunk)
            if size > limit:
                chunks = None
            else:
                chunks.append(chunk)
        yield chunk
    if chunks is not None:
        await keep_body(b"".join(chunks))


def _hit_status(remaining: float) -> str:
    return f"mirapi; hit; ttl={int(remaining)}"


def _rescue_status(upstream_status: int | None, remaining: float) -> str:
    """RFC 9211: forwarded (fwd=request), failed with `upstream_status`, answered by us."""
    forwarded = "fwd=request"
    if upstream_status is not None:
        forwarded += f"; fwd-status={upstream_status}"
    return f"mirapi; {forwarded}; ttl={int(remaining)}; detail=rescue"
