"""The dashboard's JSON feeds: what each panel shows, read from the sidecar (SPEC §12).

Each feed is read-only and small. The shaping is pure (`overview_view`,
`event_rows`, `record_view`, ...); the `*_feed` functions gather their
inputs from the running sidecar: the per-minute ring (in memory), the
shared store's hourly stats, events, records, jobs and breakers, and the
route table. A part the store cannot give right now is null with a reason
(`unavailable`), never an error page: the page shows what it has.

What no feed holds: a body (a record's is only sized), a header value
that is a credential (records never keep one), an endpoint's URL path,
query or headers (a webhook URL's path can be its secret: endpoints are
shown by host), a job's request or callback URL, a secret's value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sidecar.errors import MirApiError
from sidecar.headers import upstream_host
from sidecar.jobs.model import FAILED, Job
from sidecar.llm.budgets import usd_text, utc_day
from sidecar.observability.events import KINDS, Event, iso_time
from sidecar.observability.events import public_view as event_view
from sidecar.observability.recorder import RequestRecord
from sidecar.observability.stats import UPSTREAM_ERRORS_PREFIX, summarize
from sidecar.routing.routes import Route
from sidecar.store.breaker import BreakerStatus
from sidecar.store.budgets import Budget, SpendRow

if TYPE_CHECKING:
    from sidecar.app import Sidecar
    from sidecar.dashboard.minutes import Minute, MinuteRing

log = logging.getLogger("mirapi.dashboard")

T = TypeVar("T")

#: The rescues, capital and success rates beside the chart: the last 24 hours.
SUMMARY_HOURS = 24
#: Events read from the store per poll (the newest), before filtering.
EVENTS_READ = 500
#: Events a feed returns at most.
EVENTS_SHOWN = 25
#: Failed jobs listed (the newest).
FAILED_JOBS_SHOWN = 20
#: Hosts whose breaker is looked up (one store read each).
BREAKER_HOSTS = 50
#: Seconds a feed waits for the store before it shows that part as unavailable.
STORE_WAIT = 1.0
#: The LLM panel on a day with no LLM spend and no budget (SPEC §10).
NO_LLM_SPEND = "no LLM calls or budgets today"


# -- pure shaping -------------------------------------------------------------------


def chart_points(minutes: Sequence[Minute], now: float) -> list[dict[str, Any]]:
    """One point a minute: requests/s, and the success rate with and without rescues.

    The minute under way is divided by the seconds it has run so far, so the
    newest point is not drawn low. A minute with no request has no rate (null).
    """
    points: list[dict[str, Any]] = []
    for entry in minutes:
        start = entry.minute * 60
        seconds = min(60.0, max(1.0, now - start))
        points.append(
            {
                "time": iso_time(start),
                "requests": entry.requests,
                "rps": round(entry.requests / seconds, 3),
                "rescued": entry.rescued,
                "with_rescues": _rate(entry.ok, entry.requests),
                "without_rescues": _rate(max(0, entry.ok - entry.rescued), entry.requests),
            }
        )
    return points


def hour_totals(minutes: Sequence[Minute]) -> dict[str, Any]:
    """The last hour's totals of the ring, as `stats --json` names them."""
    requests = sum(entry.requests for entry in minutes)
    ok = sum(entry.ok for entry in minutes)
    rescued = sum(entry.rescued for entry in minutes)
    return {
        "requests": requests,
        "rescued": rescued,
        "success_rate": {
            "with_rescues": _rate(ok, requests),
            "without_rescues": _rate(max(0, ok - rescued), requests),
        },
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def event_rows(
    events: Iterable[Event], kind: str | None, route: str | None, limit: int = EVENTS_SHOWN
) -> list[dict[str, Any]]:
    """The newest `limit` events of `kind` and `route` (either None: any), newest first."""
    wanted = [
        event
        for event in events
        if (kind is None or event.kind == kind) and (route is None or event.route == route)
    ]
    wanted.sort(key=lambda event: event.time, reverse=True)
    return [event_view(event) for event in wanted[:limit]]


def failed_job_row(job: Job) -> dict[str, Any]:
    """A failed job as the panel lists it: no request, no callback URL, no body."""
    return {
        "id": job.id,
        "attempts": job.attempts,
        "last_error": job.last_error,
        "response_status": None if job.outcome is None else job.outcome.status,
        "finished_at": None if job.finished_at is None else iso_time(job.finished_at),
    }


def breaker_row(host: str, status: BreakerStatus) -> dict[str, Any]:
    """One host's breaker: state, failures counted, and since when it is open."""
    return {
        "host": host,
        "state": status.state.value,
        "failures": status.failures,
        "opened_at": iso_time(status.opened_at) if status.opened_at else None,
    }


def route_rows(routes: Iterable[Route], states: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each route with its endpoints by host and each host's breaker state."""
    rows: list[dict[str, Any]] = []
    for route in sorted(routes, key=lambda route: route.name):
        endpoints = []
        for endpoint in route.endpoints:
            host = endpoint_host(endpoint.url)
            endpoints.append({"host": host, "state": states.get(host, "unknown")})
        rows.append({"name": route.name, "strategy": route.strategy, "endpoints": endpoints})
    return rows


def endpoint_host(url: str) -> str:
    """`host[:port]` of an endpoint URL: never its path, query or credentials."""
    return upstream_host(url)


def breaker_hosts(
    known: Iterable[str], routes: Iterable[Route], counters: Mapping[str, int]
) -> list[str]:
    """The hosts whose breaker the panel shows: seen changing, routed to, or failing.

    The store cannot list breakers (as in `mirapi stats`), so these are the
    hosts this sidecar saw a breaker event for, every route endpoint's host,
    and the hosts with upstream errors in the counts; at most BREAKER_HOSTS.
    """
    hosts = dict.fromkeys(known)
    for route in routes:
        hosts.update(dict.fromkeys(endpoint_host(endpoint.url) for endpoint in route.endpoints))
    failing = sorted(
        (name for name in counters if name.startswith(UPSTREAM_ERRORS_PREFIX)),
        key=lambda name: -counters[name],
    )
    hosts.update(dict.fromkeys(name.removeprefix(UPSTREAM_ERRORS_PREFIX) for name in failing))
    return sorted(host for host in list(hosts)[:BREAKER_HOSTS] if host)


def record_view(record: RequestRecord) -> dict[str, Any]:
    """What `mirapi replay ID --show` shows, without the body: only its size or why not."""
    if record.body is not None:
        body = f"{len(record.body)} bytes recorded (not shown)" if record.body else "none"
    elif any(item in ("body", "body_too_large", "card_number") for item in record.withheld):
        body = "not recorded"
    else:
        body = "none"
    return {
        "request_id": record.request_id,
        "time": iso_time(record.time),
        "method": record.method,
        "route": record.route,
        "url": record.url,
        "status": record.status,
        "rescue": record.rescue,
        "headers": [[name, value] for name, value in record.headers],
        "body": body,
        "withheld": list(record.withheld),
    }


# -- gathering ---------------------------------------------------------------------


def llm_panel(
    spend: Sequence[SpendRow] | None, budgets: Sequence[Budget] | None, why: str | None
) -> dict[str, Any]:
    """Today's LLM spend per scope, against its budget where it has one (SPEC §10)."""
    if spend is None or budgets is None:
        return {"budgets": [], "note": f"unavailable ({why})"}
    limits = {budget.scope: budget.limit_nano for budget in budgets}
    spent = {row.scope: row.spent_nano + row.reserved_nano for row in spend}
    rows = [
        {
            "name": scope,
            "spent": f"{usd_text(spent.get(scope, 0))} USD",
            "limit": f"{usd_text(limits[scope])} USD" if scope in limits else "no budget",
        }
        for scope in sorted(limits.keys() | spent.keys())
    ]
    return {"budgets": rows, "note": NO_LLM_SPEND}


async def _read(what: str, read: Callable[[], Awaitable[T]]) -> tuple[T | None, str | None]:
    """`read()`, or (None, why) when the store fails or is slow: a panel, not a page, is lost."""
    try:
        async with asyncio.timeout(STORE_WAIT):
            return await read(), None
    except TimeoutError:
        return None, f"the store did not answer in {STORE_WAIT:g} s"
    except MirApiError as error:
        return None, error.code
    except Exception as error:
        # A bug must not cost the page: logged by type only (no data in it).
        log.warning("dashboard: reading %s failed (%s)", what, type(error).__name__)
        return None, "error"


async def overview_feed(sidecar: Sidecar, ring: MinuteRing) -> dict[str, Any]:
    """The chart, the last hour's and the last day's totals, rescues, capital, LLM spend."""
    now = sidecar.clock.now()
    ring.sample(now)  # the minute under way as of now, not as of the last second
    minutes = ring.series(int(now // 60))
    since = int(now // 3600) - SUMMARY_HOURS + 1
    counters, why = await _read("stats", lambda: sidecar.store.stats_read(since))
    day = None if counters is None else summarize(counters, None, None)
    if day is not None:
        for name in ("breakers_open", "queue_depth", "upstream_errors"):
            day.pop(name, None)
    return {
        "now": iso_time(now),
        "chart": chart_points(minutes, now),
        "hour": hour_totals(minutes[1:] if len(minutes) > 60 else minutes),
        "day": day,
        "day_unavailable": why,
        "llm": await _llm_today(sidecar, now),
    }


async def _llm_today(sidecar: Sidecar, now: float) -> dict[str, Any]:
    spend, why = await _read("LLM spend", lambda: sidecar.store.spend(day=utc_day(now)))
    budgets, budgets_why = await _read("LLM budgets", sidecar.store.list_budgets)
    return llm_panel(spend, budgets, why or budgets_why)


async def health_feed(sidecar: Sidecar) -> dict[str, Any]:
    """Breakers per host, routes with each endpoint's breaker, the job queue, failed jobs."""
    now = sidecar.clock.now()
    routes = list(sidecar.routes.all().values())
    since = int(now // 3600) - SUMMARY_HOURS + 1
    counters, _ = await _read("stats", lambda: sidecar.store.stats_read(since))
    hosts = breaker_hosts(sidecar.breaker_states, routes, counters or {})
    statuses, breakers_why = await _read(
        "breakers",
        lambda: asyncio.gather(*(sidecar.store.breaker_status(host) for host in hosts)),
    )
    breakers = (
        None
        if statuses is None
        else [breaker_row(host, status) for host, status in zip(hosts, statuses, strict=True)]
    )
    states = {row["host"]: row["state"] for row in breakers or []}
    depth, depth_why = await _read("job depth", sidecar.store.job_depth)
    failed, failed_why = await _read(
        "failed jobs", lambda: sidecar.store.job_list(FAILED, FAILED_JOBS_SHOWN + 1)
    )
    return {
        "now": iso_time(now),
        "breakers": breakers,
        "breakers_unavailable": breakers_why,
        "routes": route_rows(routes, states),
        "jobs": {
            "depth": depth,
            "depth_unavailable": depth_why,
            "failed": None
            if failed is None
            else [failed_job_row(job) for job in failed[:FAILED_JOBS_SHOWN]],
            "failed_more": failed is not None and len(failed) > FAILED_JOBS_SHOWN,
            "failed_unavailable": failed_why,
        },
    }


async def events_feed(sidecar: Sidecar, kind: str | None, route: str | None) -> dict[str, Any]:
    """The newest events, filtered by kind and route; the filters' choices beside them."""
    rows, why = await _read("events", lambda: sidecar.store.events_read(None, EVENTS_READ))
    events: list[Event] = []
    for _, data in rows or []:
        try:
            events.append(Event.decode(data))
        except ValueError:
            continue  # one unreadable entry must not hide the rest
    return {
        "kinds": list(KINDS),
        "routes": sorted(sidecar.routes.names()),
        "events": None if rows is None else event_rows(events, kind, route),
        "unavailable": why,
    }


async def record_feed(sidecar: Sidecar, request_id: str) -> dict[str, Any] | None:
    """The record of `request_id` without its body; None when there is none."""
    from sidecar.observability.recorder import decode

    data = await sidecar.store.request_get(request_id)
    if data is None:
        return None
    try:
        return record_view(decode(data))
    except ValueError:
        return None
