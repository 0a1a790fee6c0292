"""Idempotency keys and single-flight (SPEC §2.3).

Two duties:

1. The `Idempotency-Key` sent upstream. When a non-idempotent request may
   reach the upstream more than once (retries or failover), or the client
   gave an explicit key, every attempt carries the same key: the
   client's own `Idempotency-Key` header (strip_headers keeps it), else the
   explicit key, else the computed one, so that upstreams such as Stripe
   deduplicate.

2. Single-flight through the store. The store key is, per client (one
   client's key never meets another's):

       explicit:  "k:" + SHA256(client id, X-Proxy-Idempotency-Key, else the
                  standard Idempotency-Key that Stripe's and other SDKs send)
       computed:  "c:" + SHA256(client id, target URL, method, body)

   each part length-prefixed. The fingerprint, SHA256(method, target, body),
   catches an explicit key reused for another request (422). Then:

       claim -> COMPLETED  replay the kept answer, `Idempotent-Replayed: true`
             -> MISMATCH   422 idempotency_key_reused
             -> IN_FLIGHT  409 idempotency_in_flight (X-Idempotency-Wait: off),
                           else wait for the holder: its answer (SHARED), our
                           own call (UNSHARED), or claim again (LOST: it died)
             -> ACQUIRED   call on; renew the lock every TTL/3 until the
                           response has streamed to our client; then finish,
                           exactly once, sharing the whole response with the
                           waiters when it fits in `max_body`.

Choices worth knowing:

- Idempotent methods (GET, PUT, DELETE, ...; RFC 9110 §9.2.2) without an
  explicit key skip the store: a duplicate is harmless by definition, and
  this keeps GET streaming and the hot path free of store round trips.
- Only an explicit key replays a finished answer, for `replay_ttl`
  (24 h), and only an answer below 500: a 5xx or an error of the sidecar's
  own (502, 503, 504, ...) releases the key so the client may try again, as
  Stripe does. A computed key only coalesces requests in flight.
- A waiter that shares an in-flight answer gets `Idempotent-Replayed: true`
  only with an explicit key: with a computed key the client never asked
  for idempotency and sees an ordinary answer. A shared sidecar error keeps
  the request id of the request that made the call, for tracing it.
- An answer too big to keep (over `max_body`) or whose stream broke is not
  shared: the waiters make their own call (with the same upstream
  Idempotency-Key when it is due) and nothing is kept for replay.
- The store failing never fails a request: without it the call goes on
  without single-flight.
- The lock is renewed on the event loop's own timer, not the injected
  clock's sleep: a lease is about this process being alive, and a test
  clock whose sleep returns at once would spin. Expiry itself is judged by
  the store with the injected clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from sidecar.clock import Clock
from sidecar.errors import (
    IdempotencyConflict,
    IdempotencyKeyReused,
    MirApiError,
    StoreUnavailable,
    error_body,
    error_headers,
)
from sidecar.exchange import BodyStream, Exchange, Next, Response
from sidecar.headers import IDEMPOTENT_METHODS
from sidecar.store.cache import Headers, StoredResponse
from sidecar.store.idempotency import ClaimOutcome, IdempotencyStore, WaitOutcome

log = logging.getLogger(__name__)


#: Added to an answer that was not made for this request (Stripe's name).
REPLAYED_HEADER = ("idempotent-replayed", "true")
#: A waiter waits a little past the holder's lock before claiming again.
WAIT_MARGIN = 5.0
#: Claims a waiter makes before giving up with 409 (each after a LOST wait).
CLAIM_ROUNDS = 10
#: Default time an explicit key's answer is replayed (SPEC §2.3).
DEFAULT_REPLAY_TTL = 24 * 3600.0

#: Finishes under way, referenced so that a cancelled caller cannot lose one.
_FINISHING: set[asyncio.Task[None]] = set()


def _digest(*parts: bytes) -> str:
    """SHA-256 of length-prefixed parts (no two part lists hash alike), hex."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def computed_key(client_id: str, target: str, method: str, body: bytes) -> str:
    """SHA256(client id + target URL + method + body), hex."""
    digest = hashlib.sha256()
    for part in (client_id.encode(), target.encode(), method.encode()):
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(body)
    return digest.hexdigest()


def store_key(exchange: Exchange) -> str:
    """The single-flight key in the store: per client, explicit or computed."""
    explicit = exchange.policy.idempotency_key
    if explicit is not None:
        return "k:" + _digest(exchange.client_id.encode(), explicit.encode())
    target = exchange.targets[0]
    return "c:" + computed_key(exchange.client_id, target, exchange.method, exchange.body)


def fingerprint(exchange: Exchange) -> str:
    """What the key stands for: SHA256(method, target, body)."""
    return _digest(exchange.method.encode(), exchange.targets[0].encode(), exchange.body)


def may_resend(exchange: Exchange) -> bool:
    """True when the request can reach the upstream more than once."""
    policy = exchange.policy
    return policy.retry_count > 0 or len(exchange.targets) > 1


def replayed(record: StoredResponse, mark: bool) -> Response:
    """A fresh response from `record`, marked as a replay when `mark`."""
    headers = list(record.headers)
    if mark:
        headers.append(REPLAYED_HEADER)
    return Response(record.status, headers, record.body)


def error_record(error: MirApiError, request_id: str, now: float) -> StoredResponse:
    """The sidecar's error answer, to share with waiters (never kept).

    Without X-Request-ID: each waiter's own is added on the way out.
    """
    headers = tuple(
        (name, value) for name, value in error_headers(error, request_id) if name != "x-request-id"
    )
    return StoredResponse(error.status, headers, error_body(error, request_id), now, now)


class HeldLock:
    """A lock we hold: renewed every TTL/3 in the background, finished once.

    The renewal is a timer, not a task, so a call that ends within TTL/3
    (almost all) costs no task at all.
    """

    def __init__(self, store: IdempotencyStore, key: str, token: str, lock_ttl: float) -> None:
        self._store = store
        self._key = key
        self._token = token
        self._lock_ttl = lock_ttl
        self._interval = lock_ttl / 3
        self._finished = False
        self._loop = asyncio.get_running_loop()
        # Referenced so the loop cannot drop a renewal in progress.
        self._renewal: asyncio.Task[None] | None = None
        self._timer = self._loop.call_later(self._interval, self._renew_due)

    def _renew_due(self) -> None:
        self._renewal = self._loop.create_task(self._renew())

    async def _renew(self) -> None:
        try:
            ours = await self._store.idem_renew(self._key, self._token, self._lock_ttl)
        except StoreUnavailable:
            # Try again at the next tick; the lock may lapse meanwhile.
            ours = True
        except Exception:
            log.exception("renewing an idempotency lock failed; renewal stopped")
            return
        if not ours:
            # Fenced: the lock expired and may be someone else's now.
            log.warning("an idempotency lock expired while its request ran")
        elif not self._finished:
            self._timer = self._loop.call_later(self._interval, self._renew_due)

    async def finish(self, response: StoredResponse | None, keep_until: float | None) -> None:
        """Release the lock and hand `response` to the waiters; later calls do nothing."""
        if self._finished:
            return
        self._finished = True
        self._timer.cancel()
        task = self._loop.create_task(
            self._store.idem_finish(self._key, self._token, response, keep_until)
        )
        _FINISHING.add(task)
        task.add_done_callback(_FINISHING.discard)
        try:
            # Shielded: a second cancellation of our caller must not lose it.
            await asyncio.shield(task)
        except StoreUnavailable:
            log.warning("an idempotency lock could not be released; it lapses after its TTL")


class Idempotency:
    """Picks the upstream Idempotency-Key and runs duplicates once (single-flight)."""

    def __init__(
        self,
        store: IdempotencyStore,
        clock: Clock,
        max_body: int,
        replay_ttl: float = DEFAULT_REPLAY_TTL,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_body = max_body
        self._replay_ttl = replay_ttl

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        policy = exchange.policy
        explicit = policy.idempotency_key is not None
        # The hot path: an idempotent method without a key never reaches the store.
        if not explicit and exchange.method in IDEMPOTENT_METHODS:
            return await call_next(exchange)
        if not exchange.targets:
            return await call_next(exchange)
        if exchange.method not in IDEMPOTENT_METHODS and (explicit or may_resend(exchange)):
            exchange.idempotency_key = policy.idempotency_key or computed_key(
                exchange.client_id, exchange.targets[0], exchange.method, exchange.body
            )
        return await self._single_flight(exchange, call_next, explicit)

    async def _single_flight(self, exchange: Exchange, call_next: Next, explicit: bool) -> Response:
        key = store_key(exchange)
        request_print = fingerprint(exchange)
        lock_ttl = exchange.policy.idempotency_lock_ttl
        for _ in range(CLAIM_ROUNDS):
            token = secrets.token_hex(16)
            try:
                claim = await self._store.idem_claim(key, request_print, token, lock_ttl)
            except StoreUnavailable:
                log.warning("idempotency skipped: the store did not answer")
                return await call_next(exchange)
            if claim.outcome is ClaimOutcome.ACQUIRED:
                lock = HeldLock(self._store, key, token, lock_ttl)
                return await self._hold(exchange, call_next, lock, explicit)
            if claim.outcome is ClaimOutcome.COMPLETED:
                if claim.record is None:
                    return await call_next(exchange)
                return replayed(claim.record, mark=True)
            if claim.outcome is ClaimOutcome.MISMATCH:
                raise IdempotencyKeyReused(
                    f"{_key_header(exchange)} was already used for a request with"
                    " another method, target or body"
                )
            if not exchange.policy.idempotency_wait:
                raise _in_flight("(X-Idempotency-Wait: off)")
            try:
                result = await self._store.idem_wait(key, claim.token, lock_ttl + WAIT_MARGIN)
            except StoreUnavailable:
                log.warning("idempotency wait skipped: the store did not answer")
                return await call_next(exchange)
            if result.outcome is WaitOutcome.SHARED and result.response is not None:
                return replayed(result.response, mark=explicit)
            if result.outcome is not WaitOutcome.LOST:
                # The holder had nothing to share: our own call, without a
                # lock (the upstream Idempotency-Key still guards it).
                return await call_next(exchange)
        raise _in_flight("after waiting for it")

    async def _hold(
        self, exchange: Exchange, call_next: Next, lock: HeldLock, explicit: bool
    ) -> Response:
        try:
            response = await call_next(exchange)
        except MirApiError as error:
            await lock.finish(error_record(error, exchange.request_id, self._clock.now()), None)
            raise
        except BaseException:
            await lock.finish(None, None)
            raise
        now = self._clock.now()
        keep_until = now + self._replay_ttl if explicit and response.status < 500 else None
        share = _Share(lock, response.status, tuple(response.headers), now, keep_until)
        if response.stream is None:
            await share.done(response.body if len(response.body) <= self._max_body else None)
            return response
        response.stream = share.tee(response.stream, self._max_body)
        response.close = share.on_close(response.close)
        return response


def _key_header(exchange: Exchange) -> str:
    """Which header gave the explicit key, for messages."""
    if exchange.header("x-proxy-idempotency-key") is None and exchange.header("idempotency-key"):
        return "Idempotency-Key"
    return "X-Proxy-Idempotency-Key"


def _in_flight(detail: str) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"a request with the same idempotency key is still in flight {detail}; retry later",
        retry_after=1,
    )


class _Share:
    """Hands the holder's response to its waiters once the body is whole."""

    def __init__(
        self,
        lock: HeldLock,
        status: int,
        headers: Headers,
        stored_at: float,
        keep_until: float | None,
    ) -> None:
        self._lock = lock
        self._status = status
        # Copied now: the stages outside add the holder's own headers later.
        self._headers = headers
        self._stored_at = stored_at
        self._keep_until = keep_until

    async def done(self, body: bytes | None) -> None:
        """Finish with the whole `body`, or with nothing to share when None."""
        if body is None:
            await self._lock.finish(None, None)
            return
        expires_at = self._keep_until if self._keep_until is not None else self._stored_at
        record = StoredResponse(self._status, self._headers, body, self._stored_at, expires_at)
        await self._lock.finish(record, self._keep_until)

    async def tee(self, stream: BodyStream, limit: int) -> AsyncIterator[bytes]:
        """`stream` passed through as it comes, a copy kept up to `limit` bytes."""
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in stream:
                if size <= limit:
                    size += len(chunk)
                    if size <= limit:
                        chunks.append(chunk)
                    else:
                        chunks.clear()
                yield chunk
        except BaseException:
            # Broken, cancelled or closed unfinished: nothing whole to share.
            await self._lock.finish(None, None)
            raise
        await self.done(b"".join(chunks) if size <= limit else None)

    def on_close(
        self, close: Callable[[], Awaitable[None]] | None
    ) -> Callable[[], Awaitable[None]]:
        """`close` that first releases the lock (a no-op once the stream ended)."""

        async def close_and_release() -> None:
            try:
                await self._lock.finish(None, None)
            finally:
                if close is not None:
                    await close()

        return close_and_release
