"""The terminal of the chain: one attempt at the current target.

In route mode the endpoint under way may add headers of its own (laid over
the stripped client headers) and have its own per-attempt timeout
(`Exchange.attempt_timeout`). Injected secrets (`Exchange.secret_headers`)
are laid last, over both.
"""

from __future__ import annotations

from sidecar.exchange import Exchange, Response
from sidecar.headers import with_endpoint_headers, with_secret_headers
from sidecar.outbound.upstream import UpstreamClient


class Forward:
    """Sends `exchange` to `exchange.target` with the stripped headers."""

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client

    async def __call__(self, exchange: Exchange) -> Response:
        headers = exchange.attempt_headers or exchange.upstream_headers or []
        headers = with_endpoint_headers(headers, exchange.options.headers)
        headers = with_secret_headers(headers, exchange.secret_headers.get(exchange.target, ()))
        body = exchange.attempt_body
        return await self._client.send(
            exchange.method,
            exchange.attempt_url or exchange.target,
            headers,
            exchange.body if body is None else body,
            exchange.attempt_timeout,
        )
