"""The terminal of the chain: one attempt at the current target."""

from __future__ import annotations

from sidecar.exchange import Exchange, Response
from sidecar.upstream import UpstreamClient


class Forward:
    """Sends `exchange` to `exchange.target` with the stripped headers."""

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client

    async def __call__(self, exchange: Exchange) -> Response:
        return await self._client.send(
            exchange.method,
            exchange.target,
            exchange.upstream_headers or [],
            exchange.body,
            exchange.policy.timeout,
        )
