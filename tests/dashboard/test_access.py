"""Who may load the dashboard and read its feeds (SPEC §12): the proxy's door, the shell
without a key once keys exist, every feed behind the key, same-origin only, GET only."""

from __future__ import annotations

import re

import pytest

from sidecar.dashboard.access import cross_site, is_public_path
from tests.dashboard.conftest import Dash, asgi_get

FEEDS = (
    "/_mirapi/ui/feed/overview",
    "/_mirapi/ui/feed/health",
    "/_mirapi/ui/feed/events",
    "/_mirapi/ui/feed/requests/req_unknown",
)
SHELLS = (
    "/_mirapi/ui",
    "/_mirapi/ui/requests/req_1",
    "/_mirapi/ui/static/dashboard.js",
    "/_mirapi/ui/static/feed.js",
    "/_mirapi/ui/static/chart.js",
    "/_mirapi/ui/static/record.js",
    "/_mirapi/ui/static/dashboard.css",
    "/_mirapi/ui/static/favicon.svg",
)
OTHER_MACHINE = "203.0.113.9"


@pytest.mark.parametrize(
    ("path", "public"),
    [
        ("/_mirapi/ui", True),
        ("/_mirapi/ui/", True),
        ("/_mirapi/ui/static/dashboard.js", True),
        ("/_mirapi/ui/requests/req_1", True),
        ("/_mirapi/ui/feed/overview", False),
        ("/_mirapi/ui/static/../feed/overview", False),
        ("/_mirapi/ui/requests/a/../../feed/events", False),
        ("/_mirapi/uifeed", False),
        ("/_mirapi/metrics", False),
        ("/_mirapi/jobs/j1", False),
    ],
)
def test_only_the_shells_and_their_assets_are_public(path: str, public: bool) -> None:
    assert is_public_path(path) is public


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({}, False),
        ({"sec-fetch-site": "same-origin"}, False),
        ({"sec-fetch-site": "none"}, False),
        ({"sec-fetch-site": "same-site"}, True),
        ({"sec-fetch-site": "cross-site"}, True),
        ({"host": "127.0.0.1:8742", "origin": "http://127.0.0.1:8742"}, False),
        ({"host": "127.0.0.1:8742", "origin": "http://evil.example"}, True),
        ({"host": "127.0.0.1:8742", "origin": "http://127.0.0.1:9999"}, True),
        ({"host": "127.0.0.1:8742", "origin": "null"}, True),
    ],
)
def test_cross_site_reads_are_told_apart(headers: dict[str, str], refused: bool) -> None:
    assert (cross_site(headers) is not None) is refused


async def test_without_keys_this_machine_gets_page_and_feeds_with_hardened_headers(
    dash: Dash,
) -> None:
    page = await dash.http.get("/_mirapi/ui")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-content-type-options"] == "nosniff"
    # No inline script and no inline style: the CSP would block them.
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)
    assert "style=" not in page.text and "<style" not in page.text
    for path in FEEDS[:3]:
        feed = await dash.http.get(path)
        assert feed.status_code == 200, (path, feed.text)
        assert feed.headers["content-type"] == "application/json"
        assert feed.headers["cache-control"] == "no-store"
        assert feed.headers["x-content-type-options"] == "nosniff"
        assert "access-control-allow-origin" not in feed.headers
    script = await dash.http.get("/_mirapi/ui/static/dashboard.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]


async def test_without_keys_another_machine_gets_nothing(dash: Dash) -> None:
    for path in (*SHELLS, *FEEDS):
        answer = await asgi_get(dash.app, path, client=OTHER_MACHINE)
        assert answer.status == 401, path
        assert b"mirapi keys create" in answer.body


async def test_once_keys_exist_the_shell_loads_without_one_and_every_feed_needs_one(
    dash: Dash,
) -> None:
    key = await dash.add_key()
    for path in SHELLS:
        answer = await asgi_get(dash.app, path, client=OTHER_MACHINE)
        assert answer.status == 200, path
        assert key.encode() not in answer.body
    for path in FEEDS:
        for headers in ({}, {"X-MirApi-Key": "mk_000000000000_" + "A" * 43}):
            refused = await asgi_get(dash.app, path, client=OTHER_MACHINE, headers=headers)
            assert refused.status == 401, (path, headers)
            refused_here = await dash.http.get(path, headers=headers)
            assert refused_here.status_code == 401, (path, headers)
    for path in FEEDS[:3]:
        admitted = await asgi_get(
            dash.app, path, client=OTHER_MACHINE, headers={"X-MirApi-Key": key}
        )
        assert admitted.status == 200, path
    # The record feed is behind the key too: with it, an unknown id is a JSON 404.
    missing = await dash.http.get(FEEDS[3], headers={"X-MirApi-Key": key})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "record_not_found"


async def test_a_cross_site_read_of_a_feed_is_refused_before_anything_is_read(
    dash: Dash,
) -> None:
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
    ):
        answer = await dash.http.get("/_mirapi/ui/feed/overview", headers=headers)
        assert answer.status_code == 403, headers
        assert answer.json()["error"]["code"] == "cross_site_refused"
        assert "access-control-allow-origin" not in answer.headers
    same = await dash.http.get(
        "/_mirapi/ui/feed/overview",
        headers={"Sec-Fetch-Site": "same-origin", "Origin": dash.url},
    )
    assert same.status_code == 200


async def test_feeds_are_read_only(dash: Dash) -> None:
    for method in ("POST", "PUT", "DELETE"):
        answer = await dash.http.request(method, "/_mirapi/ui/feed/overview")
        assert answer.status_code == 405, method
        assert answer.json()["error"]["code"] == "method_not_allowed"


async def test_a_preflight_gets_no_cors_answer(dash: Dash) -> None:
    answer = await dash.http.options(
        "/_mirapi/ui/feed/overview",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in answer.headers
