"""Idempotency keys (SPEC §2.3).

The key is `X-Proxy-Idempotency-Key`, else SHA-256 of client id, target,
method and body. When a non-idempotent request may be sent more than once
(retries or failover), every attempt carries the same `Idempotency-Key`
upstream: the client's own, else the explicit or computed key, so that
upstreams such as Stripe deduplicate.
"""

from __future__ import annotations

import hashlib

from sidecar.exchange import Exchange, Next, Response

#: RFC 9110 §9.2.2: these may be repeated without changing the outcome.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def computed_key(client_id: str, target: str, method: str, body: bytes) -> str:
    """SHA256(client id + target URL + method + body), hex."""
    digest = hashlib.sha256()
    for part in (client_id.encode(), target.encode(), method.encode()):
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(body)
    return digest.hexdigest()


def may_resend(exchange: Exchange) -> bool:
    """True when the request can reach the upstream more than once."""
    policy = exchange.policy
    return policy.retry_count > 0 or len(exchange.targets) > 1


class Idempotency:
    """Chooses the Idempotency-Key sent upstream with every attempt."""

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        policy = exchange.policy
        if exchange.method not in IDEMPOTENT_METHODS and (
            policy.idempotency_key is not None or may_resend(exchange)
        ):
            exchange.idempotency_key = policy.idempotency_key or computed_key(
                exchange.client_id, exchange.targets[0], exchange.method, exchange.body
            )
        return await call_next(exchange)
