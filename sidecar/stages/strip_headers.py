"""What the upstream sees: the client's headers minus every proxy header (SPEC §2.7).

Removed: names starting with a MirApi prefix, `X-Timeout`, `X-Deadline`,
hop-by-hop headers (RFC 9110 §7.6.1) and any header the client's
`Connection` names, plus `Host` (the upstream's own is set from the URL)
and `Content-Length` (recomputed from the body we send). Added:
`X-Request-ID`, and `Idempotency-Key` when a non-idempotent request may be
sent more than once, so that upstreams such as Stripe deduplicate.

A route endpoint's own headers (an API version, the backup provider's
credentials) go through the same filter, so a route can never put a proxy
header back, and then replace the client's headers of the same name on the
attempts to that endpoint (`with_endpoint_headers`).
"""

from __future__ import annotations

from sidecar.exchange import Exchange, Headers, Next, Response
from sidecar.headers import is_forwarded


def upstream_headers(headers: Headers, request_id: str, idempotency_key: str | None) -> Headers:
    """The headers to forward, in the client's order."""
    named_by_connection = {
        token.strip().lower()
        for name, value in headers
        if name == "connection"
        for token in value.split(",")
    }
    kept: Headers = []
    has_request_id = has_idempotency_key = False
    for name, value in headers:
        if name in named_by_connection or not is_forwarded(name):
            continue
        has_request_id = has_request_id or name == "x-request-id"
        has_idempotency_key = has_idempotency_key or name == "idempotency-key"
        kept.append((name, value))
    if not has_request_id:
        kept.append(("x-request-id", request_id))
    if idempotency_key is not None and not has_idempotency_key:
        kept.append(("idempotency-key", idempotency_key))
    return kept


class StripHeaders:
    """Computes `exchange.upstream_headers` once; every attempt reuses them."""

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        if exchange.upstream_headers is None:
            exchange.upstream_headers = upstream_headers(
                exchange.headers, exchange.request_id, exchange.idempotency_key
            )
        return await call_next(exchange)
