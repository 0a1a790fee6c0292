"""The per-request object every stage sees, and the response they return.

An `Exchange` is the inbound request (method, path, headers, the body read
once), its parsed `RequestPolicy`, and facts the stages learn on the way
(the target, attempts, which rescue happened). It knows nothing of Quart or
ASGI, so `mirapi curl` can build one in-process.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from sidecar.policy import RequestPolicy

Headers = list[tuple[str, str]]


def new_request_id() -> str:
    """A random request id: 16 hex characters are unique enough and cheap to make."""
    return os.urandom(8).hex()


@dataclass(slots=True)
class Exchange:
    """One proxied request on its way through the pipeline."""

    method: str
    #: The path as received, with /r/NAME removed in path mode (SPEC §1).
    path: str
    #: The raw query string, without the leading '?'.
    query: str
    #: Header names in lower case, in arrival order; values as received.
    headers: Headers
    body: bytes
    policy: RequestPolicy
    request_id: str
    client_id: str = "local"
    #: The upstream URLs to try in order: the primary, then failover ones.
    targets: tuple[str, ...] = ()
    #: The URL of the attempt under way (set by the cascade stage).
    target: str = ""
    #: Headers to send upstream (set by strip_headers, once per request).
    upstream_headers: Headers | None = None
    #: The Idempotency-Key every attempt carries upstream, when one is due.
    idempotency_key: str | None = None
    attempts: int = 0
    rescue: str | None = None
    #: Which URL gave the final answer, for logs and X-MirApi-Upstream.
    answered_by: str = ""
    started: float = field(default_factory=time.monotonic)
    #: Notes on each attempt for `-v` and logs: (url, outcome, wait seconds).
    attempt_log: list[tuple[str, str, float]] = field(default_factory=list)
    #: Told of each attempt as it ends, for live progress (`mirapi curl -v`).
    on_attempt: Callable[[str, str, float], None] | None = None

    def note_attempt(self, outcome: str, wait: float) -> None:
        """Record how the attempt at `self.target` ended and the wait before the next."""
        self.attempt_log.append((self.target, outcome, wait))
        if self.on_attempt is not None:
            self.on_attempt(self.target, outcome, wait)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


BodyStream = AsyncIterator[bytes]


@dataclass(slots=True)
class Response:
    """What the pipeline answers: a status, headers and a body.

    `body` is whole bytes for answers the sidecar made itself; `stream` is
    the upstream's body, passed through unread until the client reads it.
    `close` releases the upstream connection when a stage discards the
    response (a retried 503, say) without reading it.
    """

    status: int
    headers: Headers
    body: bytes = b""
    stream: BodyStream | None = None
    close: Callable[[], Awaitable[None]] | None = None

    async def discard(self) -> None:
        """Drop the body without reading it and free the connection."""
        if self.close is not None:
            await self.close()

    async def read(self, limit: int) -> bytes:
        """The whole body, at most `limit` bytes (ValueError beyond it)."""
        if self.stream is None:
            return self.body
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in self.stream:
                size += len(chunk)
                if size > limit:
                    raise ValueError(f"response body over {limit} bytes")
                chunks.append(chunk)
        finally:
            await self.discard()
        self.stream = None
        self.close = None
        self.body = b"".join(chunks)
        return self.body


Next = Callable[[Exchange], Awaitable[Response]]
