"""LLM budgets' pure parts (SPEC §10): scopes, the UTC day, money in nano-USD,
and the `X-LLM-Budget` header.

Money is an integer count of nano-USD (1e-9 USD) wherever it is stored or
added, so the store's arithmetic (SQL, Lua) is exact and atomic; it becomes
a `Decimal` of USD only at the edges (headers, the CLI, JSON). A budget is
per UTC day: it rolls over at 00:00 UTC.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation

#: nano-USD in one USD.
NANO_PER_USD = 1_000_000_000
#: The scope every LLM call falls under.
ALL = "all"
ROUTE_PREFIX = "route:"
KEY_PREFIX = "key:"
#: The client id of a loopback caller without a client key: it has no `key:` scope.
LOCAL_CLIENT = "local"
#: The most USD a budget or a cap may name: keeps every sum of nano-USD well
#: inside 2**53 (Lua's exact integers) and SQLite's int64.
MAX_USD = Decimal(1_000_000)
#: A scope's name: printable ASCII, no spaces; route names and key ids both fit.
_SCOPE_NAME = re.compile(r"[!-~]{1,200}", re.ASCII)
_SECONDS_PER_DAY = 86_400
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
#: Days of spend kept (at least 31, as `mirapi llm spend` promises; older ones are pruned).
SPEND_KEEP_DAYS = 32
#: The record kind that mirrors which scopes have a budget (name: the scope,
#: data: the limit in nano-USD). The store's budget tables stay the truth for
#: reservations; this copy lets every sidecar know, from memory and kept
#: fresh by change notices (SPEC §11), whether a call needs a reservation.
BUDGETS_KIND = "llm_budgets"


def parse_scope(text: str) -> str:
    """`route:NAME`, `key:ID` or `all`, as given; ValueError naming what is wrong."""
    scope = text.strip()
    if scope == ALL:
        return ALL
    for prefix, what in ((ROUTE_PREFIX, "route name"), (KEY_PREFIX, "client key id")):
        if scope.startswith(prefix):
            name = scope[len(prefix) :]
            if not name:
                raise ValueError(f"scope {text!r} has no {what} after {prefix!r}")
            if _SCOPE_NAME.fullmatch(name) is None:
                raise ValueError(
                    f"scope {text!r}: a {what} is printable ASCII without spaces,"
                    " up to 200 characters"
                )
            return scope
    raise ValueError(f"scope {text!r} is not one of route:NAME, key:ID or all")


def scopes_for(route_name: str | None, client_id: str) -> tuple[str, ...]:
    """The scopes one call counts against: `all`, its route's, its client key's."""
    scopes = [ALL]
    if route_name:
        scopes.append(ROUTE_PREFIX + route_name)
    if client_id != LOCAL_CLIENT:
        scopes.append(KEY_PREFIX + client_id)
    return tuple(scopes)


def utc_day(now: float) -> str:
    """The UTC day of wall-clock `now`, "YYYY-MM-DD": a budget's period."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def seconds_to_rollover(now: float) -> int:
    """Whole seconds until the next 00:00 UTC (a 429's Retry-After); at least 1."""
    return max(1, math.ceil((math.floor(now / _SECONDS_PER_DAY) + 1) * _SECONDS_PER_DAY - now))


def check_day(day: str) -> str:
    """`day` when it is a "YYYY-MM-DD" date; ValueError otherwise."""
    if _DAY.fullmatch(day) is None:
        raise ValueError(f"day {day!r} is not YYYY-MM-DD")
    try:
        date.fromisoformat(day)
    except ValueError:
        raise ValueError(f"day {day!r} is not a date") from None
    return day


def previous_day(day: str) -> str:
    """The UTC day before `day` (both "YYYY-MM-DD")."""
    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


def day_ordinal(day: str) -> int:
    """A day as a number that orders days (the proleptic Gregorian ordinal)."""
    return date.fromisoformat(day).toordinal()


def oldest_kept_day(now: float) -> str:
    """The first day whose spend is still kept at `now` (SPEND_KEEP_DAYS back)."""
    return utc_day(now - SPEND_KEEP_DAYS * _SECONDS_PER_DAY)


def day_end(day: str) -> float:
    """Wall-clock seconds of the 00:00 UTC that ends `day`."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)
    return start.timestamp() + _SECONDS_PER_DAY


def usd_to_nano(usd: Decimal) -> int:
    """USD as nano-USD, rounded up: a reservation never undershoots the cost."""
    return int((usd * NANO_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def nano_to_usd(nano: int) -> Decimal:
    """nano-USD as USD, exact (trailing zeros dropped)."""
    return Decimal(nano).scaleb(-9).normalize()


def usd_text(nano: int) -> str:
    """nano-USD as a plain decimal string of USD ("0.000842", "5", never "8.42E-4")."""
    return format(nano_to_usd(nano), "f")


def parse_usd(text: str, what: str) -> Decimal:
    """A positive decimal amount of USD, at most MAX_USD; ValueError naming `what`."""
    stripped = text.strip().removeprefix("$")
    if re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", stripped, re.ASCII) is None:
        raise ValueError(f"{what} {text!r} is not a decimal amount of USD (such as 0.05)")
    try:
        usd = Decimal(stripped)
    except InvalidOperation:
        raise ValueError(f"{what} {text!r} is not a decimal amount of USD") from None
    if usd <= 0:
        raise ValueError(f"{what} must be above zero")
    if usd > MAX_USD:
        raise ValueError(f"{what} {text!r} is above the most allowed, {MAX_USD} USD")
    if usd_to_nano(usd) != usd * NANO_PER_USD:
        raise ValueError(f"{what} {text!r} has more than 9 decimal places")
    return usd


@dataclass(frozen=True)
class CallBudget:
    """One call's `X-LLM-Budget`: at most `limit_nano`; `clamp` lowers max_tokens to fit."""

    limit_nano: int
    clamp: bool


def parse_call_budget(value: str) -> CallBudget:
    """`0.05` or `0.05; clamp` (USD); ValueError with a message fit for a 400."""
    amount, sep, rest = value.partition(";")
    clamp = False
    if sep:
        flag = rest.strip().lower()
        if flag != "clamp":
            raise ValueError(
                f"X-LLM-Budget: {rest.strip()!r} after ';' is not 'clamp'"
                " (the form is '0.05' or '0.05; clamp')"
            )
        clamp = True
    usd = parse_usd(amount, "X-LLM-Budget")
    return CallBudget(limit_nano=usd_to_nano(usd), clamp=clamp)


def encode_limit(limit_nano: int) -> bytes:
    """A budget's limit as its `BUDGETS_KIND` record holds it."""
    return str(limit_nano).encode()


def decode_limit(scope: str, data: bytes) -> int:
    """The inverse of `encode_limit` (a record table's decoder); ValueError on anything else."""
    return int(data.decode("ascii"))
