"""The sidecar's own endpoints under /_mirapi/, served by Quart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Quart, Response

from sidecar.errors import NotFound, error_body, error_headers
from sidecar.exchange import new_request_id

if TYPE_CHECKING:
    from sidecar.app import Sidecar


def make_control_app(sidecar: Sidecar) -> Quart:
    """A Quart app for health and (later) jobs, metrics and more."""
    app = Quart("mirapi")

    @app.get("/_mirapi/healthz")
    async def healthz() -> dict[str, Any]:
        return sidecar.health()

    @app.get("/_mirapi/livez")
    async def livez() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/_mirapi/readyz")
    async def readyz() -> tuple[dict[str, Any], int, dict[str, str]]:
        # 503 while degraded, so a probe can tell; the sidecar still proxies,
        # on local state. Every 503 the sidecar sends carries Retry-After.
        ready, body = sidecar.readiness()
        if ready:
            return body, 200, {}
        return body, 503, {"Retry-After": "1"}

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        # The sidecar's own errors are JSON everywhere, never Quart's HTML page.
        error = NotFound("no such sidecar endpoint", code="not_found")
        request_id = new_request_id()
        return Response(
            error_body(error, request_id),
            status=404,
            headers=dict(error_headers(error, request_id)),
        )

    return app
