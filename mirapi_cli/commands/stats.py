"""`mirapi stats [--json] [--since D]`: what the sidecars did and what they saved (SPEC §8, §9).

Requests, rescues by reason, the success rate with and without rescues,
upstream errors by host, breakers open now, the job queue's depth and the
rescued capital per currency (Stripe-style amounts, in minor units); and,
once LLM calls went through a route today, today's LLM spend and tokens per
route (`llm_today`, the UTC day: what `mirapi llm spend` shows for the
`route:NAME` scopes, whatever `--since` says).

The counts live in the store's hourly buckets (`sidecar/observability/stats.py` writes
them about once a second), so `--since 1h` means "from the start of the
hour bucket an hour ago": hour granularity, and without `--since` every
bucket the store keeps. Like `jobs` and `routes`, this opens the store the
sidecar uses, so it works whether or not one runs.

The store cannot list breakers, so the hosts asked about are those with
upstream errors in the counts (a breaker opens only after some); at most
`BREAKER_HOSTS` of them, the most failing first. On the embedded store a
running sidecar writes its breakers behind, about once a second.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mirapi_cli.errors import CliError
from mirapi_cli.options import ConfigOption, DataDirOption, JsonOption
from mirapi_cli.store_access import with_store

if TYPE_CHECKING:
    from rich.console import RenderableType

    from sidecar.store.base import Store
    from sidecar.store.breaker import BreakerStore
    from sidecar.store.budgets import SpendRow

RedisOption = Annotated[
    str | None,
    typer.Option("--redis", metavar="URL", help="Stats shared through Redis (env: MIRAPI_REDIS)."),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="D",
        help="Only the last D (1h, 7d, 30m), to the hour. Default: all kept.",
        show_default=False,
    ),
]

#: The most hosts whose breaker is looked up (one store read each).
BREAKER_HOSTS = 100

#: Currencies whose minor unit is not a hundredth (ISO 4217, as Stripe uses them).
_EXPONENTS = {
    **dict.fromkeys(
        "bif clp djf gnf isk jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split(), 0
    ),
    **dict.fromkeys("bhd jod kwd omr tnd".split(), 3),
}


def stats(
    as_json: JsonOption = False,
    since: SinceOption = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Requests, rescues, success rates, upstream errors and rescued capital."""
    from mirapi_cli import output
    from sidecar.llm.budgets import utc_day
    from sidecar.observability.stats import summarize

    now = time.time()
    since_hour = 0 if since is None else since_hour_of(since, now)
    today = utc_day(now)

    async def load(
        store: Store,
    ) -> tuple[dict[str, int], list[str], int | None, list[SpendRow]]:
        counters = await store.stats_read(since_hour)
        every = counters if since_hour == 0 else await store.stats_read(0)
        breakers = await open_breakers(store, every)
        return counters, breakers, await store.job_depth(), await store.spend(day=today)

    counters, breakers, depth, spent = with_store(data_dir, config, redis, load)
    summary = summarize(counters, breakers, depth)
    llm = llm_today(today, spent)
    if llm is not None:
        summary["llm_today"] = llm

    def human() -> RenderableType:
        return render(summary, since_hour)

    # One object: piped, that is one JSON line; --json, the same object.
    output.listing([summary], as_json=as_json, human=human, document=summary)


def since_hour_of(text: str, now: float) -> int:
    """The first hour bucket of "the last `text`" (1h, 7d); CliError when it is no duration."""
    from sidecar.durations import parse_duration

    stripped = text.strip()
    # A bare number is milliseconds elsewhere (X-Timeout), which means nothing here.
    if not stripped[-1:].isalpha():
        raise CliError(f"--since: {text!r} needs a unit: 30m, 1h, 7d")
    try:
        seconds = parse_duration(stripped)
    except ValueError as error:
        raise CliError(f"--since: {error}") from None
    if seconds <= 0:
        raise CliError("--since: the duration must be above zero")
    return max(0, math.floor((now - seconds) / 3600))


def llm_today(day: str, rows: list[SpendRow]) -> dict[str, Any] | None:
    """`llm_today` of `stats --json`: `day`'s spend and tokens per route; None when none."""
    from mirapi_cli.commands.llm import usd_number
    from sidecar.llm.budgets import ROUTE_PREFIX

    routes = {
        row.scope.removeprefix(ROUTE_PREFIX): {
            "spent_usd": usd_number(row.spent_nano),
            "requests": row.requests,
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
        }
        for row in rows
        if row.day == day and row.scope.startswith(ROUTE_PREFIX)
    }
    return {"day": day, "routes": dict(sorted(routes.items()))} if routes else None


async def open_breakers(store: BreakerStore, counters: dict[str, int]) -> list[str]:
    """The hosts, among those with upstream errors, whose breaker is not closed."""
    from sidecar.observability.stats import UPSTREAM_ERRORS_PREFIX
    from sidecar.store.base import BreakerState

    failing = sorted(
        (
            name.removeprefix(UPSTREAM_ERRORS_PREFIX)
            for name in counters
            if name.startswith(UPSTREAM_ERRORS_PREFIX)
        ),
        key=lambda host: -counters[UPSTREAM_ERRORS_PREFIX + host],
    )[:BREAKER_HOSTS]
    statuses = await asyncio.gather(*(store.breaker_status(host) for host in failing))
    return [
        host
        for host, status in zip(failing, statuses, strict=True)
        if status.state != BreakerState.CLOSED
    ]


# -- the human view ------------------------------------------------------------------


def render(summary: dict[str, Any], since_hour: int) -> RenderableType:
    """Rich tables: the totals, then rescues, capital and upstream errors when any."""
    from rich.console import Group

    from mirapi_cli import output

    rates = summary["success_rate"]
    breakers = summary["breakers_open"]
    totals: dict[str, object] = {
        "since": f"{_time(since_hour * 3600)} (by the hour)" if since_hour else "all kept",
        "requests": summary["requests"],
        "rescued": sum(summary["rescued"].values()),
        "success rate": _percent(rates["with_rescues"]),
        "without rescues": _percent(rates["without_rescues"]),
        "breakers open": ", ".join(breakers) if breakers else "none",
        "job queue": summary["queue_depth"],
        "PCI blocked": summary["pci_blocked"],
        "rate limited": summary["rate_limited"],
    }
    parts: list[RenderableType] = [output.key_value_table(totals, title="MirApi stats")]
    if summary["rescued"]:
        parts.append(
            output.table(("Rescue", "Requests"), summary["rescued"].items(), title="Rescues")
        )
    if summary["rescued_capital"]:
        parts.append(
            output.table(
                ("Currency", "Amount", "Minor units"),
                (
                    (currency.upper(), money(currency, units), units)
                    for currency, units in summary["rescued_capital"].items()
                ),
                title="Rescued capital",
            )
        )
    if "llm_today" in summary:
        llm = summary["llm_today"]
        parts.append(
            output.table(
                ("Route", "Spent (USD)", "Requests", "Input tokens", "Output tokens"),
                (
                    (
                        name,
                        _plain(route["spent_usd"]),
                        route["requests"],
                        route["input_tokens"],
                        route["output_tokens"],
                    )
                    for name, route in llm["routes"].items()
                ),
                title=f"LLM spend today ({llm['day']}, UTC)",
                ids=("Route",),
            )
        )
    if summary["upstream_errors"]:
        errors = sorted(summary["upstream_errors"].items(), key=lambda item: -item[1])
        opened = set(breakers or ())
        parts.append(
            output.table(
                ("Host", "Errors", "Breaker"),
                ((host, count, "open" if host in opened else "") for host, count in errors),
                title="Upstream errors",
            )
        )
    return Group(*parts)


def money(currency: str, units: int) -> str:
    """Minor units as the amount people read: 2500 usd -> 25.00, 700 jpy -> 700."""
    exponent = _EXPONENTS.get(currency.lower(), 2)
    if exponent == 0:
        return f"{units:,}"
    whole, fraction = divmod(units, 10**exponent)
    return f"{whole:,}.{fraction:0{exponent}d}"


def _plain(usd: float) -> str:
    """A JSON USD number as its decimal text (never 1e-06)."""
    from decimal import Decimal

    return format(Decimal(repr(usd)), "f")


def _percent(rate: float | None) -> str:
    return "no requests" if rate is None else f"{rate * 100:.2f}%"


def _time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:00Z")
