"""One resilient call made in-process: the engine behind `mirapi curl`.

It runs the very chain the sidecar runs, so a one-off call gets the same
retries, timeouts, failover, smart cache, breaker and idempotency. There is
no egress policy: the user typed the URL. Given the sidecar's store (the
same Redis, or the same data dir), a one-off call shares its cache and
breaker state; given a route table loaded from that store, it can use a
stored route (`X-Route-Key`), with `path` and `query` appended to the
route's endpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.clock import SYSTEM_CLOCK, Clock
from sidecar.exchange import Exchange, Headers, Response, new_request_id
from sidecar.outbound.upstream import UpstreamClient
from sidecar.pipeline import Parts, build_chain
from sidecar.security.egress import Egress, OpenEgress
from sidecar.security.gate import inbound, read_headers
from sidecar.stages.routing import RouteLookup
from sidecar.store.base import Store
from sidecar.store.memory import MemoryStore

#: One-off calls may read a large body into memory (-d @file); 1 GiB bounds it.
ONESHOT_MAX_BODY = 1024**3
#: The largest response a one-off call keeps in the smart cache.
ONESHOT_CACHE_ENTRY_LIMIT = 10 * 1024**2


@dataclass
class OneShot:
    """A request as `mirapi curl` describes it: headers include proxy headers."""

    method: str
    headers: Headers
    body: bytes = b""
    on_attempt: Callable[[str, str, float], None] | None = None
    timeout: float = 30.0
    request_id: str = field(default_factory=new_request_id)
    #: Appended to the target (SPEC §1); a route's path, as `/v1/charges`.
    path: str = "/"
    #: The query string, without '?'.
    query: str = ""
    #: curl's `-k` (False: any certificate) and `--connect-timeout` (seconds).
    verify_tls: bool = True
    connect_timeout: float | None = None


async def call(
    request: OneShot,
    clock: Clock = SYSTEM_CLOCK,
    store: Store | None = None,
    routes: RouteLookup | None = None,
    egress: Egress | None = None,
) -> tuple[Response, Exchange]:
    """Run the chain for `request`; the caller reads the response, then `close`s it.

    `store` must be open; without one, state lives in memory for this call.
    `routes` (a `RouteTable` the caller has loaded with `refresh()`) is
    where `X-Route-Key` names are looked up; without it none is known.
    `egress` vets the target (default: none, the user typed it); `mirapi
    curl -L` passes a policy for redirect hops, and tests a resolver.
    Raises MirApiError for anything the sidecar would have answered itself.
    """
    # Through the sidecar's own door: the same checks and decoding as a
    # request that arrives over HTTP (text from the command line is sent as
    # its UTF-8 bytes, as curl sends its arguments' bytes).
    lowered, first = read_headers(
        (name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
        for name, value in request.headers
    )
    request_id = first.get("x-request-id", request.request_id)
    arrived = inbound(request.method, request.path, request.query, lowered, request_id)
    exchange = arrived.exchange(request.body, request.timeout, on_attempt=request.on_attempt)
    client = UpstreamClient(
        egress or OpenEgress(),
        verify_tls=request.verify_tls,
        connect_timeout=request.connect_timeout,
    )
    parts = Parts(
        store=store or MemoryStore(clock),
        max_body=ONESHOT_MAX_BODY,
        cache_entry_limit=ONESHOT_CACHE_ENTRY_LIMIT,
        clock=clock,
        routes=routes,
    )
    chain = build_chain(client, parts)
    try:
        response = await chain(exchange)
    except BaseException:
        await client.aclose()
        raise
    release = response.close

    async def close() -> None:
        if release is not None:
            await release()
        await client.aclose()

    response.close = close
    return response, exchange
