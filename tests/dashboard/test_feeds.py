"""What the dashboard's feeds show (SPEC §12), from real requests through a sidecar in
this process to a scripted upstream on loopback; and what they never show."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sidecar.dashboard.feeds import chart_points, hour_totals, record_view
from sidecar.dashboard.minutes import MINUTES, Minute, MinuteRing, Totals, totals_of
from sidecar.observability.recorder import RequestRecord
from sidecar.routing import routes
from sidecar.routing.routes import Endpoint, Route
from tests.dashboard.conftest import Dash
from tests.support.upstream import Upstream, reply

#: The stats reach the store about once a second; events every 0.25 s.
WAIT = 5.0
CARD_LIKE_SECRET = "sk_live_DASHBOARD_SECRET_123"


async def feed(dash: Dash, name: str, **params: str) -> dict[str, Any]:
    answer = await dash.http.get("/_mirapi/ui/feed/" + name, params=params)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


async def until(
    read: Callable[[], Awaitable[dict[str, Any]]], holds: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """`read()` until `holds` its answer; fails after WAIT seconds with the last one."""
    deadline = time.monotonic() + WAIT
    while True:
        data = await read()
        if holds(data):
            return data
        assert time.monotonic() < deadline, f"still {data}"
        await asyncio.sleep(0.1)


async def test_a_rescue_shows_in_the_chart_rescues_capital_events_and_its_record(
    dash: Dash, upstream: Upstream
) -> None:
    upstream.then(reply(503), reply(200))
    answer = await dash.http.post(
        "/",
        headers={
            "X-Target-URL": upstream.url + "/v1/charges",
            "X-Retry-Count": "2",
            "X-Retry-Delay": "10ms",
            "Authorization": "Bearer " + CARD_LIKE_SECRET,
            "Content-Type": "application/json",
        },
        content=b'{"amount": 2000, "currency": "usd", "description": "PRIVATE-ORDER"}',
    )
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]

    # The chart's ring is in memory: the rescue is there at once.
    overview = await feed(dash, "overview")
    assert overview["hour"]["requests"] == 1
    assert overview["hour"]["rescued"] == 1
    assert overview["hour"]["success_rate"] == {"with_rescues": 1.0, "without_rescues": 0.0}
    assert overview["chart"][-1]["rescued"] == 1
    assert len(overview["chart"]) == MINUTES
    assert overview["llm"] == {"budgets": [], "note": "no LLM calls or budgets today"}

    overview = await until(
        lambda: feed(dash, "overview"), lambda data: bool(data["day"]["rescued"])
    )
    assert overview["day"]["rescued"] == {"retry": 1}
    assert overview["day"]["rescued_capital"] == {"usd": 2000}

    events = await until(lambda: feed(dash, "events"), lambda data: bool(data["events"]))
    [event] = events["events"]
    assert (event["kind"], event["reason"], event["request_id"]) == ("rescue", "retry", request_id)
    assert "rescue" in events["kinds"]

    record = await until(
        lambda: _record(dash, request_id), lambda data: data.get("request_id") == request_id
    )
    assert record["rescue"] == "retry"
    assert record["method"] == "POST"
    assert record["body"] == "67 bytes recorded (not shown)"
    assert "header:authorization" in record["withheld"]

    # Nothing secret in any feed: no body text, no credential, no path beyond the record's.
    for name in ("overview", "health", "events"):
        text = (await dash.http.get("/_mirapi/ui/feed/" + name)).text
        assert CARD_LIKE_SECRET not in text and "PRIVATE-ORDER" not in text
    text = (await dash.http.get(f"/_mirapi/ui/feed/requests/{request_id}")).text
    assert CARD_LIKE_SECRET not in text and "PRIVATE-ORDER" not in text


async def _record(dash: Dash, request_id: str) -> dict[str, Any]:
    answer = await dash.http.get(f"/_mirapi/ui/feed/requests/{request_id}")
    data: dict[str, Any] = answer.json()
    return data


async def test_events_filter_by_kind_and_route(dash: Dash, upstream: Upstream) -> None:
    route = Route("pay", (Endpoint(upstream.url),))
    await dash.app.store.record_put("routes", "pay", routes.encode(route), True)
    await dash.app.routes.refresh()
    upstream.then(reply(503), reply(200), reply(502))
    rescued = await dash.http.get(
        "/v1/x", headers={"X-Route-Key": "pay", "X-Retry-Count": "1", "X-Retry-Delay": "1ms"}
    )
    failed = await dash.http.get("/v1/y", headers={"X-Target-URL": upstream.url + "/v1/y"})
    assert (rescued.status_code, failed.status_code) == (200, 502)
    everything = await until(lambda: feed(dash, "events"), lambda data: len(data["events"]) == 2)
    assert [e["kind"] for e in everything["events"]] == ["upstream_error", "rescue"]
    assert everything["routes"] == ["pay"]
    by_route = await feed(dash, "events", route="pay")
    assert [(e["kind"], e["route"]) for e in by_route["events"]] == [("rescue", "pay")]
    by_kind = await feed(dash, "events", kind="upstream_error")
    assert [e["request_id"] for e in by_kind["events"]] == [failed.headers["x-request-id"]]
    assert (await feed(dash, "events", kind="job"))["events"] == []
    wrong = await dash.http.get("/_mirapi/ui/feed/events", params={"kind": "nonsense"})
    assert wrong.status_code == 400


async def test_health_shows_an_open_breaker_routes_by_host_and_a_failed_job(
    dash: Dash, upstream: Upstream
) -> None:
    secret_path = "/hooks/T000/B000/XXXXSECRETPATH?token=abc"
    route = Route("slack", (Endpoint(upstream.url + secret_path),))
    await dash.app.store.record_put("routes", "slack", routes.encode(route), True)
    await dash.app.routes.refresh()
    host = upstream.url.removeprefix("http://")

    upstream.then(reply(503))
    broken = await dash.http.get(
        "/",
        headers={"X-Target-URL": upstream.url + "/v1", "X-Circuit-Breaker": "on; threshold=1"},
    )
    assert broken.status_code == 503

    upstream.then(reply(400, b'{"error":"card_declined"}'))
    job = await dash.http.post(
        "/",
        headers={
            "X-Target-URL": upstream.url + "/v1/jobs",
            "X-Webhook-Callback": upstream.url + "/callback",
        },
        content=b"{}",
    )
    assert job.status_code == 202, job.text

    health = await until(lambda: feed(dash, "health"), lambda data: bool(data["jobs"]["failed"]))
    [breaker] = health["breakers"]
    assert (breaker["host"], breaker["state"], breaker["failures"]) == (host, "open", 1)
    assert breaker["opened_at"] is not None
    assert health["routes"] == [
        {"name": "slack", "strategy": "priority", "endpoints": [{"host": host, "state": "open"}]}
    ]
    [failed] = health["jobs"]["failed"]
    assert failed["response_status"] == 400
    assert health["jobs"]["depth"] in (0, 1)  # done once its callback is delivered
    text = (await dash.http.get("/_mirapi/ui/feed/health")).text
    assert "SECRETPATH" not in text and "token=abc" not in text and "card_declined" not in text


def test_the_minute_ring_counts_each_minute_from_the_running_totals() -> None:
    totals = {"now": Totals()}
    ring = MinuteRing(lambda: totals["now"])
    ring.record(999, Totals(0, 0, 0))
    ring.record(1000, Totals(2, 2, 1))
    ring.record(1002, Totals(5, 4, 2))  # no sample in 1001: its requests count in 1002
    series = ring.series(1002)
    assert len(series) == MINUTES
    assert [(m.minute, m.requests, m.ok, m.rescued) for m in series[-3:]] == [
        (1000, 2, 2, 1),
        (1001, 0, 0, 0),
        (1002, 3, 2, 1),
    ]
    # An hour on, the old minutes are gone; the first one kept counts from the one before.
    ring.record(1000 + MINUTES, Totals(9, 8, 2))
    later = ring.series(1000 + MINUTES)
    assert sum(entry.requests for entry in later) == 7  # minute 1000 is the baseline
    ring.record(999, Totals(0, 0, 0))  # older than the ring: ignored
    assert sum(entry.requests for entry in ring.series(1000 + MINUTES)) == 7
    # `sample` reads the totals now, into now's minute.
    totals["now"] = Totals(12, 10, 3)
    ring.sample((1000 + MINUTES) * 60 + 30.0)
    assert ring.series(1000 + MINUTES)[-1].requests == 7


def test_totals_come_from_the_metrics_counts() -> None:
    requests = {("pay", "2xx"): 5, ("pay", "5xx"): 2, ("h:1", "3xx"): 1, ("h:1", "4xx"): 1}
    assert totals_of(requests, {"retry": 2, "cache": 1}) == Totals(9, 6, 3)


def test_chart_points_rate_the_minute_under_way_by_its_seconds_so_far() -> None:
    minutes = [Minute(499, 0, 0, 0), Minute(500, 30, 30, 0), Minute(501, 2, 1, 1)]
    points = chart_points(minutes, now=501 * 60 + 10)
    assert [p["rps"] for p in points] == [0.0, 0.5, 0.2]
    assert points[0]["with_rescues"] is None
    assert (points[2]["with_rescues"], points[2]["without_rescues"]) == (0.5, 0.0)
    totals = hour_totals(minutes)
    assert totals["requests"] == 32 and totals["rescued"] == 1


def test_a_record_view_never_holds_the_body() -> None:
    record = RequestRecord(
        request_id="req_1",
        time=0.0,
        method="POST",
        url="https://api.example.com/v1/charges",
        route=None,
        headers=(("content-type", "application/json"),),
        body=b'{"card":"PRIVATE"}',
        status=200,
        rescue="retry",
        withheld=("header:authorization",),
    )
    view = record_view(record)
    assert view["body"] == "18 bytes recorded (not shown)"
    assert "PRIVATE" not in str(view)
    unrecorded = record_view(
        RequestRecord("req_2", 0.0, "POST", "/v1", "pay", (), None, 200, None, ("body",))
    )
    assert unrecorded["body"] == "not recorded"


def test_the_llm_panel_shows_todays_spend_against_budgets() -> None:
    from sidecar.dashboard.feeds import llm_panel
    from sidecar.store.budgets import Budget, SpendRow

    spend = [SpendRow("route:chat", "2026-12-07", 2_750_000, 1_000_000, 5_000_000_000, 1, 1000, 50)]
    panel = llm_panel(spend, [Budget("route:chat", 5_000_000_000), Budget("all", 10**10)], None)
    assert panel["budgets"] == [
        {"name": "all", "spent": "0 USD", "limit": "10 USD"},
        {"name": "route:chat", "spent": "0.00375 USD", "limit": "5 USD"},
    ]
    assert llm_panel(None, None, "store_unavailable")["note"] == "unavailable (store_unavailable)"
