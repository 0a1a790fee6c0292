"""Counting what the sidecar did, per hour, for `mirapi stats` (SPEC §8, §9).

`StatsCounter` is an observer: for every proxied request it adds a few
named counts to an in-memory bucket for the hour the request arrived in, and
a background task adds the buckets to the store (`LogWriter.stats_add`) about
once a second. Counting is plain dict arithmetic on the request path; only
the flush awaits the store, so a slow or lost store costs a request nothing.
While the store refuses them the counts wait for the next flush (bounded in
keys and in age), since a count lost is a rescue the user never sees.

The counts, summed by `LogReader.stats_read` over the hours asked for:

    requests                  every proxied request
    ok                        answered with a status below 400
    ok_rescued                ok, and only thanks to a rescue
    rescued:<reason>          retry, cache, failover, cascade_fallback
    upstream_errors:<host>    attempts a host failed (no answer, or a 5xx)
    capital:<currency>        ok rescued requests' Stripe-style amounts, minor units
    pci_blocked               refused for a card number in the body
    rate_limited              refused by the rate limit

Rescued capital reads a rescued request's body for `amount` and `currency`
only (`rescued_capital`), as a JSON object or as a form (Stripe's own API
takes `amount=2000&currency=usd`); nothing else of the body is looked at or
kept. Hosts are `host[:port]` as the circuit breaker names them, never a
path. `summarize` turns the summed counts into `mirapi stats --json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

import orjson

from sidecar.clock import Clock
from sidecar.exchange import Exchange
from sidecar.headers import upstream_host
from sidecar.observability.observe import Outcome
from sidecar.store.logs import LogWriter

log = logging.getLogger("mirapi.stats")

REQUESTS = "requests"
OK = "ok"
OK_RESCUED = "ok_rescued"
PCI_BLOCKED = "pci_blocked"
RATE_LIMITED = "rate_limited"
RESCUED_PREFIX = "rescued:"
UPSTREAM_ERRORS_PREFIX = "upstream_errors:"
CAPITAL_PREFIX = "capital:"

#: The error codes counted on their own (sidecar/errors.py).
PCI_ERROR = "pci_card_number"
RATE_LIMIT_ERROR = "rate_limited"

#: Bodies longer than this are not read for rescued capital: a payment call
#: is a few KiB, and parsing a large upload on the request path is not free.
CAPITAL_BODY_LIMIT = 256 * 1024
#: The largest amount believed (Stripe's largest is 12 digits): a larger one
#: is a mistake or a different field, and would swamp the totals.
MAX_AMOUNT = 10**15 - 1
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_DIGITS = re.compile(r"[0-9]{1,15}")
#: An attempt that got no answer at all (Envoy's words, sidecar/outbound/upstream.py).
_NO_ANSWER = frozenset({"timeout", "connect-failure", "reset"})

#: How often the counts go to the store, seconds (real time).
FLUSH_INTERVAL = 1.0
#: At most this many distinct (hour, name) counts wait for the store; past
#: that, counts under new names are dropped (and counted) until a flush.
PENDING_LIMIT = 10_000
#: Counts older than this (hours) are given up when the store keeps refusing.
PENDING_HOURS = 48


# -- what one request adds, as pure functions -----------------------------------------


def rescued_capital(exchange: Exchange) -> tuple[str, int] | None:
    """(currency lower-case, amount in minor units) from a Stripe-style body, or None.

    The body must be a JSON object with an integer `amount` and a 3-letter
    `currency` at its top level, or a form with one of each
    (`amount=2000&currency=usd`). Anything else, ambiguous (a field given
    twice) or implausible (an amount not above 0, or over `MAX_AMOUNT`) is
    None: rescued capital is a claim to the user, so it must not guess.
    """
    body = exchange.body
    if not body or len(body) > CAPITAL_BODY_LIMIT:
        return None
    kind = _body_kind(exchange.header("content-type"), body)
    if kind == "json":
        return _from_json(body)
    if kind == "form":
        return _from_form(body)
    return None


def _body_kind(content_type: str | None, body: bytes) -> str | None:
    if content_type is None:
        # No media type: a JSON object starts with "{", else try it as a form.
        return "json" if body.lstrip()[:1] == b"{" else "form"
    media = content_type.partition(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return "json"
    if media == "application/x-www-form-urlencoded":
        return "form"
    return None


def _from_json(body: bytes) -> tuple[str, int] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    amount, currency = data.get("amount"), data.get("currency")
    # bool is an int in Python; `true` is not an amount.
    if type(amount) is not int or not isinstance(currency, str):
        return None
    return _checked(amount, currency)


def _from_form(body: bytes) -> tuple[str, int] | None:
    # Only the two names are decoded; every other field is skipped unread.
    found: dict[str, list[str]] = {"amount": [], "currency": []}
    for field in body.decode("latin-1").split("&"):
        name, _, value = field.partition("=")
        name = unquote_plus(name)
        if name in found:
            found[name].append(unquote_plus(value))
    amounts, currencies = found["amount"], found["currency"]
    if len(amounts) != 1 or len(currencies) != 1 or _DIGITS.fullmatch(amounts[0]) is None:
        return None
    return _checked(int(amounts[0]), currencies[0])


def _checked(amount: int, currency: str) -> tuple[str, int] | None:
    if not 0 < amount <= MAX_AMOUNT or _CURRENCY.fullmatch(currency) is None:
        return None
    return currency.lower(), amount


def failed_hosts(exchange: Exchange) -> list[str]:
    """The host of every attempt that got no answer or a 5xx, in order.

    The same failures the circuit breaker counts; an attempt the open
    circuit refused, or a race branch cancelled, reached no upstream.
    """
    hosts: list[str] = []
    for url, outcome, _ in exchange.attempt_log:
        # "503; over retry budget": the attempt's own result comes first.
        head = outcome.partition(";")[0].strip()
        if head in _NO_ANSWER or (head.isdigit() and int(head) >= 500):
            hosts.append(upstream_host(url))
    return hosts


def counts_of(outcome: Outcome) -> dict[str, int]:
    """The counts one request adds to its hour's bucket."""
    counts = {REQUESTS: 1}
    ok = outcome.status < 400
    if ok:
        counts[OK] = 1
    if outcome.error == PCI_ERROR:
        counts[PCI_BLOCKED] = 1
    elif outcome.error == RATE_LIMIT_ERROR:
        counts[RATE_LIMITED] = 1
    exchange = outcome.exchange
    if exchange is not None:
        for host in failed_hosts(exchange):
            key = UPSTREAM_ERRORS_PREFIX + host
            counts[key] = counts.get(key, 0) + 1
    if outcome.rescue is not None:
        counts[RESCUED_PREFIX + outcome.rescue] = 1
        if ok:
            counts[OK_RESCUED] = 1
        capital = capital_of(outcome)
        if capital is not None:
            currency, amount = capital
            counts[CAPITAL_PREFIX + currency] = amount
    return counts


def capital_of(outcome: Outcome) -> tuple[str, int] | None:
    """What a rescue saved, (currency, minor units), or None.

    Only a rescued request answered below 400 counts: an answer still failing
    saved nothing. Never read from a PCI-blocked body (one is never rescued,
    but this says so where the body is read).
    """
    exchange = outcome.exchange
    if (
        outcome.rescue is None
        or outcome.status >= 400
        or exchange is None
        or outcome.error == PCI_ERROR
    ):
        return None
    return rescued_capital(exchange)


# -- the observer -------------------------------------------------------------------


class StatsCounter:
    """Counts every outcome per hour in memory; adds the counts to the store each second."""

    def __init__(
        self,
        store: LogWriter,
        clock: Clock,
        *,
        interval: float = FLUSH_INTERVAL,
        limit: int = PENDING_LIMIT,
    ) -> None:
        self._store = store
        self._clock = clock
        self._interval = interval
        self._limit = limit
        #: hour (unix seconds // 3600) -> name -> count, not yet in the store.
        self._pending: dict[int, dict[str, int]] = {}
        self._size = 0
        #: Counts dropped because `limit` names were already waiting.
        self.dropped = 0
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    def observe(self, outcome: Outcome) -> None:
        """Add `outcome`'s counts to its hour; never blocks, never raises."""
        try:
            self._add(int(outcome.time // 3600), counts_of(outcome))
        except Exception:
            # A bug here must not fail the request that was just answered.
            log.exception("stats: an outcome could not be counted")

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mirapi-stats-writer")

    async def stop(self) -> None:
        """Stop the task, then write what is still waiting (once)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    async def flush(self) -> None:
        """Add every waiting count to the store, oldest hour first."""
        if not self._pending:
            return
        pending, self._pending, self._size = self._pending, {}, 0
        hours = sorted(pending)
        for index, hour in enumerate(hours):
            try:
                await self._store.stats_add(hour, pending[hour])
            except asyncio.CancelledError:
                # `stop` cancelled a flush under way: its own flush writes these.
                self._put_back({h: pending[h] for h in hours[index:]})
                raise
            except Exception as error:
                self._keep_for_later({h: pending[h] for h in hours[index:]}, error)
                return
        if self._failing:
            log.info("stats: writing again")
        self._failing = False

    def _add(self, hour: int, counts: Mapping[str, int]) -> None:
        bucket = self._pending.get(hour)
        if bucket is None:
            bucket = self._pending[hour] = {}
        for name, count in counts.items():
            if name in bucket:
                bucket[name] += count
            elif self._size < self._limit:
                bucket[name] = count
                self._size += 1
            else:
                self.dropped += 1

    def _keep_for_later(self, unwritten: dict[int, dict[str, int]], error: Exception) -> None:
        # The type only: a message could quote what was being written.
        if not self._failing:
            log.warning(
                "stats: the store did not take the counts (%s); kept for later",
                type(error).__name__,
            )
        self._failing = True
        self._put_back(unwritten)

    def _put_back(self, unwritten: dict[int, dict[str, int]]) -> None:
        """Wait again with counts not written, but none past PENDING_HOURS old."""
        oldest = math.floor(self._clock.now() / 3600) - PENDING_HOURS
        for hour, counts in unwritten.items():
            if hour >= oldest:
                self._add(hour, counts)

    async def _run(self) -> None:
        while True:
            # Real time: a fake clock's sleep would spin.
            await asyncio.sleep(self._interval)
            await self.flush()


# -- `mirapi stats --json` ------------------------------------------------------------


def summarize(
    counters: Mapping[str, int],
    breakers_open: Iterable[str] | int | None,
    queue_depth: int | None,
) -> dict[str, Any]:
    """The `stats --json` shape from counts summed over the hours asked for.

    `success_rate.with_rescues` is the share of requests answered below 400;
    `without_rescues` leaves out those only a rescue saved, i.e. what the
    upstreams alone would have given. Both are null when there was no
    request. `breakers_open` is the hosts whose breaker is not closed (or
    just their number, or None when unknown).
    """
    requests = counters.get(REQUESTS, 0)
    ok = counters.get(OK, 0)
    ok_rescued = counters.get(OK_RESCUED, 0)
    return {
        "requests": requests,
        "rescued": _with_prefix(counters, RESCUED_PREFIX),
        "success_rate": {
            "with_rescues": _rate(ok, requests),
            "without_rescues": _rate(ok - ok_rescued, requests),
        },
        "upstream_errors": _with_prefix(counters, UPSTREAM_ERRORS_PREFIX),
        "breakers_open": (
            breakers_open
            if breakers_open is None or isinstance(breakers_open, int)
            else sorted(breakers_open)
        ),
        "queue_depth": queue_depth,
        "rescued_capital": _with_prefix(counters, CAPITAL_PREFIX),
        "pci_blocked": counters.get(PCI_BLOCKED, 0),
        "rate_limited": counters.get(RATE_LIMITED, 0),
    }


def _with_prefix(counters: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {
        name.removeprefix(prefix): count
        for name, count in sorted(counters.items())
        if name.startswith(prefix) and count
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
