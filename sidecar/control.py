"""The sidecar's own endpoints under /_mirapi/, served by Quart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Quart, Response

from sidecar.dashboard import make_blueprint
from sidecar.errors import MethodNotAllowed, MirApiError, NotFound, error_body, error_headers
from sidecar.exchange import new_request_id
from sidecar.jobs.model import public_view
from sidecar.observability.metrics import CONTENT_TYPE
from sidecar.process.state import process_token

if TYPE_CHECKING:
    from sidecar.app import Sidecar


def make_control_app(sidecar: Sidecar) -> Quart:
    """A Quart app for health, jobs, metrics and more."""
    app = Quart("mirapi")

    @app.get("/_mirapi/healthz")
    async def healthz() -> dict[str, Any]:
        # The token lets `mirapi sidecar stop` tell this process from one
        # that got its pid later (sidecar/process/state.py).
        return {**sidecar.health(), "token": process_token()}

    @app.get("/_mirapi/livez")
    async def livez() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/_mirapi/readyz")
    async def readyz() -> tuple[dict[str, Any], int, dict[str, str]]:
        # 503 while degraded, so a probe can tell; the sidecar still proxies,
        # on local state. Every 503 the sidecar sends carries Retry-After.
        ready, body = sidecar.readiness()
        depth = await sidecar.job_depth()
        if depth is not None:
            body["jobs"] = {"depth": depth}
        if ready:
            return body, 200, {}
        return body, 503, {"Retry-After": "1"}

    @app.get("/_mirapi/metrics")
    async def metrics() -> Response:
        # Prometheus' classic text format (sidecar/observability/metrics.py); never a path
        # or a body in it, and behind the client key like every non-probe.
        return Response(await sidecar.metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/_mirapi/jobs/<job_id>")
    async def job_status(job_id: str) -> dict[str, Any] | Response:
        # Status only (SPEC §5): never the request's or the response's body.
        try:
            job = await sidecar.store.job_get(job_id)
        except MirApiError as error:  # StoreUnavailable: 503 with Retry-After
            return error_response(error)
        if job is None:
            return error_response(NotFound(f"no job {job_id!r}", code="job_not_found"))
        return public_view(job)

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        # The sidecar's own errors are JSON everywhere, never Quart's HTML page.
        return error_response(NotFound("no such sidecar endpoint", code="not_found"))

    @app.errorhandler(405)
    async def wrong_method(_: Exception) -> Response:
        # The dashboard's feeds are read-only: a POST gets JSON, not an HTML page.
        return error_response(MethodNotAllowed("this sidecar endpoint does not take that method"))

    # The live dashboard, /_mirapi/ui (SPEC §12).
    app.register_blueprint(make_blueprint(sidecar))

    return app


def error_response(error: MirApiError) -> Response:
    """The sidecar's JSON error shape, as a Quart response."""
    request_id = new_request_id()
    return Response(
        error_body(error, request_id),
        status=error.status,
        headers=dict(error_headers(error, request_id)),
    )
