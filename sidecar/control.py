"""The sidecar's own endpoints under /_mirapi/, served by Quart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Quart

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
    async def readyz() -> dict[str, Any]:
        return {"status": "ready"}

    return app
