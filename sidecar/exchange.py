"""The per-request object every stage sees, and the response they return.

An `Exchange` is the inbound request (method, path, headers, the body read
once), its parsed `RequestPolicy`, and facts the stages learn on the way
(the target, attempts, which rescue happened). It knows nothing of Quart or
ASGI, so `mirapi curl` can build one in-process.

In route mode (SPEC §4) `targets` are the route's endpoints, joined with the
request path, and `target_options` holds, index for index, what each
endpoint adds to its attempts: extra headers and its own timeout. The stage
that picks a target calls `aim(index)`, so later stages read the options of
the endpoint under way.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sidecar.policy import RequestPolicy
from sidecar.routing.routes import PATH_MODE_PREFIX, Route

if TYPE_CHECKING:
    from sidecar.llm.call import LlmCall

Headers = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class TargetOptions:
    """What one route endpoint adds to every attempt sent to it."""

    #: Sent upstream with each attempt, replacing the client's header of the
    #: same name; lower-case names, proxy headers already removed.
    headers: tuple[tuple[str, str], ...] = ()
    #: The per-attempt timeout for this endpoint, seconds; None: the policy's.
    timeout: float | None = None
    #: The LLM API the endpoint speaks ("openai", "anthropic"), or None (SPEC §10).
    provider: str | None = None
    #: The model LLM calls use there, whatever the client named; None: the client's.
    model: str | None = None
    #: The client's model name -> the endpoint's.
    model_map: tuple[tuple[str, str], ...] = ()
    #: Calls to this endpoint cost nothing (`price = "free"`).
    free: bool = False


NO_OPTIONS = TargetOptions()


#: The attempt log's outcome for an attempt an open circuit refused.
CIRCUIT_OPEN_OUTCOME = "circuit_open"
#: Added to an attempt's outcome in the log when the retry budget refused its retry.
OVER_BUDGET = "over retry budget"


def new_request_id() -> str:
    """A random request id: 16 hex characters are unique enough and cheap to make."""
    return os.urandom(8).hex()


@dataclass(slots=True)
class Exchange:
    """One proxied request on its way through the pipeline."""

    method: str
    #: The path as received, with /r/NAME removed in path mode (SPEC §1);
    #: always starting with '/' (the door refuses any other request-target).
    path: str
    #: The raw query string, without the leading '?'.
    query: str
    #: Header names in lower case, in arrival order; values as text, read
    #: from their bytes as UTF-8 by the door (sidecar.security.gate), which refuses
    #: any other bytes, and sent upstream as the same bytes.
    headers: Headers
    body: bytes
    policy: RequestPolicy
    request_id: str
    #: The client key's id, or "local" while no keys exist (scopes cache and idempotency).
    client_id: str = "local"
    #: The client's IP address ("" on a unix socket), for per-address rate limits.
    client_address: str = ""
    #: The upstream URLs to try in order: the primary, then failover ones,
    #: or a route's endpoints.
    targets: tuple[str, ...] = ()
    #: Per target, index for index; empty outside route mode.
    target_options: tuple[TargetOptions, ...] = ()
    #: The stored route this request goes through, or None (X-Target-URL).
    route: Route | None = None
    #: The URL of the attempt under way (set by the cascade stage).
    target: str = ""
    #: Which of `targets` is `target`.
    target_index: int = 0
    #: Headers to send upstream (set by strip_headers, once per request);
    #: the endpoint's own headers are laid over them per attempt (forward).
    upstream_headers: Headers | None = None
    #: Per target URL, the secret headers laid over every attempt to it, after
    #: the endpoint's own (set by inject_secrets, once per request). Keyed by
    #: URL, not index: a race branch is re-indexed but keeps its URL.
    secret_headers: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict, repr=False)
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
    #: An LLM call (SPEC §10): set by routing when a target names a provider
    #: and the request is a chat/messages POST; None for every other request.
    llm: LlmCall | None = field(default=None, repr=False)
    #: The body and URL of the attempt under way when they differ from
    #: `body` and `target` (an LLM call's usage option, max_tokens, model or
    #: translation); set per attempt by the LLM stage, read by forward.
    attempt_body: bytes | None = field(default=None, repr=False)
    attempt_url: str | None = None
    #: The attempt's headers when they differ from `upstream_headers`.
    attempt_headers: Headers | None = field(default=None, repr=False)

    def aim(self, index: int) -> None:
        """Make `targets[index]` the target of the attempts that follow."""
        self.target_index = index
        self.target = self.targets[index]

    @property
    def options(self) -> TargetOptions:
        """What the endpoint under way adds to its attempts (nothing outside routes)."""
        if self.target_index < len(self.target_options):
            return self.target_options[self.target_index]
        return NO_OPTIONS

    @property
    def attempt_timeout(self) -> float:
        """The timeout of one attempt at the target under way."""
        timeout = self.options.timeout
        return self.policy.timeout if timeout is None else timeout

    def received_path(self) -> str:
        """The path as the client sent it: path mode's `/r/NAME` put back.

        Routing strips `/r/NAME` in path mode; a job's run goes through
        Routing again and must see it, and the PCI guard scans what was sent.
        """
        if self.route is not None and self.policy.route_key is None:
            return f"{PATH_MODE_PREFIX}{self.route.name}{self.path}"
        return self.path

    def fallback_rescue(self) -> str:
        """`X-Rescued` for an answer from a later target: a route's, or X-Failover-URL's."""
        return "cascade_fallback" if self.route is not None else "failover"

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
