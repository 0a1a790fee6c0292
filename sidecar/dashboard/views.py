"""The dashboard's routes on the control app: two HTML shells, their assets, the feeds.

The shells (`/_mirapi/ui`, `/_mirapi/ui/requests/ID`) are Quart templates
with no data in them; the script they load polls the feeds under
`/_mirapi/ui/feed/` (GET only) and draws what they say. Access is the
door's (sidecar/dashboard/access.py); this module adds the cross-site
refusal and the headers of every answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from quart import Blueprint, Response, render_template, request, send_from_directory

import sidecar.dashboard.feeds as feeds
from sidecar.dashboard.access import (
    COMMON_HEADERS,
    CONTENT_SECURITY_POLICY,
    FEED_PREFIX,
    RECORD_PREFIX,
    STATIC_PREFIX,
    UI_PATH,
    cross_site,
)
from sidecar.dashboard.minutes import MinuteRing, totals_of
from sidecar.errors import BadRequest, CrossSiteRead, MirApiError, NotFound
from sidecar.observability.events import KINDS

if TYPE_CHECKING:
    from sidecar.app import Sidecar

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
#: How often the page polls its feeds, milliseconds (SPEC §12: 2 s or faster).
POLL_MS = 1000


def make_blueprint(sidecar: Sidecar) -> Blueprint:
    """The dashboard's routes for `sidecar`."""
    from sidecar.control import error_response

    ui = Blueprint("dashboard", __name__, template_folder="templates")
    # Sampled from the metrics' running totals: nothing added to the request path.
    ring = MinuteRing(lambda: totals_of(sidecar.metrics.requests, sidecar.metrics.rescues))

    @ui.before_app_serving
    async def start_sampling() -> None:
        await ring.start(sidecar.clock.now)

    @ui.after_app_serving
    async def stop_sampling() -> None:
        await ring.stop()

    @ui.before_request
    async def refuse_cross_site() -> Response | None:
        if not request.path.startswith(FEED_PREFIX):
            return None
        headers = {name.lower(): value for name, value in request.headers.items()}
        why = cross_site(headers)
        return None if why is None else error_response(CrossSiteRead(why))

    @ui.after_request
    async def harden(response: Response) -> Response:
        response.headers.update(COMMON_HEADERS)
        if response.mimetype == "text/html":
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    @ui.get(UI_PATH)
    @ui.get(UI_PATH + "/")
    async def page() -> str:
        return await render_template("dashboard.html", poll_ms=POLL_MS, kinds=KINDS)

    @ui.get(RECORD_PREFIX + "<request_id>")
    async def record_page(request_id: str) -> str:
        # The id is only echoed into the page (escaped); the record comes from its feed.
        return await render_template("record.html", request_id=request_id)

    @ui.get(STATIC_PREFIX + "<path:name>")
    async def static(name: str) -> Response:
        return await send_from_directory(STATIC_DIR, name)

    @ui.get(FEED_PREFIX + "overview")
    async def overview() -> Response:
        return _json(await feeds.overview_feed(sidecar, ring))

    @ui.get(FEED_PREFIX + "health")
    async def health() -> Response:
        return _json(await feeds.health_feed(sidecar))

    @ui.get(FEED_PREFIX + "events")
    async def events() -> Response:
        kind = request.args.get("kind") or None
        route = request.args.get("route") or None
        if kind is not None and kind not in KINDS:
            return error_response(BadRequest(f"kind must be one of {', '.join(KINDS)}"))
        return _json(await feeds.events_feed(sidecar, kind, route))

    @ui.get(FEED_PREFIX + "requests/<request_id>")
    async def record(request_id: str) -> Response:
        try:
            view = await feeds.record_feed(sidecar, request_id)
        except MirApiError as error:  # StoreUnavailable: 503 with Retry-After
            return error_response(error)
        if view is None:
            return error_response(
                NotFound(
                    "no request record with this id: unknown, or older than the newest kept",
                    code="record_not_found",
                )
            )
        return _json(view)

    return ui


def _json(data: object) -> Response:
    return Response(orjson.dumps(data), content_type="application/json")
