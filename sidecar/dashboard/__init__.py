"""The live dashboard at /_mirapi/ui (SPEC §12).

    access.py    who may load the page and read its feeds; the answers' headers
    minutes.py   the per-minute ring of the last hour, sampled from the metrics
    feeds.py     what each panel shows, as JSON
    views.py     the Quart routes: the page, a record's page, assets, feeds
    templates/   the HTML shells (Jinja, no data in them)
    static/      the script, the style sheet and the icon; no CDN, no build step

The chart is drawn by a few lines of our own script as SVG (static/chart.js):
a vendored charting library would be tens of KiB to review and update for
three lines on one chart, and server-made SVG would mean a new image per
poll instead of a few numbers.
"""

from __future__ import annotations

from sidecar.dashboard.access import is_public_path
from sidecar.dashboard.views import make_blueprint

__all__ = ["is_public_path", "make_blueprint"]
