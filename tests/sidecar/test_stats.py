"""Stats: rescued capital from a body, the counts per request, the hourly
counter and its flush to a real MemoryStore, and the `stats --json` shape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from sidecar.errors import StoreUnavailable
from sidecar.exchange import Exchange
from sidecar.observability.observe import Outcome
from sidecar.observability.stats import (
    MAX_AMOUNT,
    StatsCounter,
    counts_of,
    failed_hosts,
    rescued_capital,
    summarize,
)
from sidecar.policy import parse_policy
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock

#: A wall-clock time well inside the store's kept window (hour 472_222).
T0 = 1_700_000_000.0
HOUR = int(T0 // 3600)


def exchange(body: bytes = b"", content_type: str | None = None) -> Exchange:
    headers = [("x-target-url", "https://api.test/v1/charges")]
    if content_type is not None:
        headers.append(("content-type", content_type))
    return Exchange("POST", "/v1/charges", "", headers, body, parse_policy(dict(headers)), "rid")


def outcome(
    status: int = 200,
    rescue: str | None = None,
    *,
    ex: Exchange | None = None,
    error: str | None = None,
    time: float = T0,
    host: str = "api.test",
) -> Outcome:
    return Outcome(
        request_id="rid",
        time=time,
        method="POST",
        route=None,
        host=host,
        status=status,
        attempts=1,
        rescue=rescue,
        latency=0.01,
        error=error,
        client_id="local",
        exchange=ex,
    )


# -- rescued_capital -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"amount": 2000, "currency": "usd"}', "application/json", ("usd", 2000)),
        (
            b'{"amount":700,"currency":"EUR","x":[1,2]}',
            "application/json; charset=utf-8",
            ("eur", 700),
        ),
        (b'{"amount": 5, "currency": "gbp"}', "application/vnd.api+json", ("gbp", 5)),
        (b'  {"amount": 5, "currency": "gbp"}', None, ("gbp", 5)),
        # Stripe's own API: a form.
        (
            b"amount=2000&currency=usd&source=tok_visa",
            "application/x-www-form-urlencoded",
            ("usd", 2000),
        ),
        (b"description=a+b&amount=500&currency=USD", None, ("usd", 500)),
        (b"amount=%32000&currency=us%64", "application/x-www-form-urlencoded", ("usd", 2000)),
        (str(MAX_AMOUNT).encode() + b"&currency=jpy", None, None),  # no amount= name
        (b"amount=" + str(MAX_AMOUNT).encode() + b"&currency=jpy", None, ("jpy", MAX_AMOUNT)),
    ],
)
def test_capital_is_read_from_a_json_object_or_a_form(
    body: bytes, content_type: str | None, expected: tuple[str, int] | None
) -> None:
    assert rescued_capital(exchange(body, content_type)) == expected


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", None),
        (b'{"amount": "2000", "currency": "usd"}', "application/json"),  # a string amount
        (b'{"amount": 20.5, "currency": "usd"}', "application/json"),
        (b'{"amount": true, "currency": "usd"}', "application/json"),
        (b'{"amount": 0, "currency": "usd"}', "application/json"),
        (b'{"amount": -5, "currency": "usd"}', "application/json"),
        (b'{"amount": 1000000000000000, "currency": "usd"}', "application/json"),  # > MAX
        (b'{"amount": 2000, "currency": "usdx"}', "application/json"),
        (b'{"amount": 2000, "currency": "u$d"}', "application/json"),
        (b'{"amount": 2000, "currency": 840}', "application/json"),
        (b'{"amount": 2000}', "application/json"),
        (b'{"charge": {"amount": 2000, "currency": "usd"}}', "application/json"),  # not top level
        (b'[{"amount": 2000, "currency": "usd"}]', "application/json"),
        (b'{"amount": 2000, "currency": "usd"', "application/json"),  # broken JSON
        (b"amount=2000&currency=usd", "multipart/form-data; boundary=x"),
        (b"amount=2000&currency=usd", "text/plain"),
        (b"amount=20.00&currency=usd", None),
        (b"amount=-20&currency=usd", None),
        (b"amount=2000&amount=9&currency=usd", None),  # ambiguous: given twice
        (b"metadata[amount]=2000&currency=usd", None),
        (b"amount=2000&currency=usd", "application/json"),  # says JSON, is not
    ],
)
def test_anything_else_is_no_capital(body: bytes, content_type: str | None) -> None:
    assert rescued_capital(exchange(body, content_type)) is None


def test_a_body_over_the_limit_is_not_read() -> None:
    padding = b" " * (256 * 1024)
    assert rescued_capital(exchange(b'{"amount": 1, "currency": "usd"}' + padding)) is None


# -- counts_of -----------------------------------------------------------------------


def attempted(*attempts: tuple[str, str]) -> Exchange:
    ex = exchange(b'{"amount": 2000, "currency": "usd"}', "application/json")
    for url, result in attempts:
        ex.attempt_log.append((url, result, 0.0))
    return ex


def test_a_rescued_request_counts_its_rescue_its_capital_and_the_failed_attempts() -> None:
    ex = attempted(
        ("https://API.test:443/v1/charges", "503"),
        ("https://api.test/v1/charges", "timeout"),
        ("https://api.test/v1/charges", "200"),
    )
    assert counts_of(outcome(200, "retry", ex=ex)) == {
        "requests": 1,
        "ok": 1,
        "ok_rescued": 1,
        "rescued:retry": 1,
        "upstream_errors:api.test": 2,  # the breaker's host: lower case, no default port
        "capital:usd": 2000,
    }


def test_upstream_errors_are_the_failures_the_breaker_counts() -> None:
    ex = attempted(
        ("http://a.test:8080/x?card=1", "502; over retry budget"),
        ("https://b.test/x", "connect-failure"),
        ("https://b.test/x", "reset"),
        ("https://c.test/x", "circuit_open"),  # no call was made
        ("https://d.test/x", "cancelled"),  # a race branch dropped
        ("https://e.test/x", "404"),
        ("https://e.test/x", "429"),
    )
    assert failed_hosts(ex) == ["a.test:8080", "b.test", "b.test"]
    counts = counts_of(outcome(502, ex=ex))
    assert counts == {"requests": 1, "upstream_errors:a.test:8080": 1, "upstream_errors:b.test": 2}


def test_a_rescue_that_still_failed_saves_no_capital() -> None:
    counts = counts_of(outcome(402, "failover", ex=attempted()))
    assert counts == {"requests": 1, "rescued:failover": 1}


def test_an_unrescued_request_is_not_read_for_capital() -> None:
    assert counts_of(outcome(200, None, ex=attempted())) == {"requests": 1, "ok": 1}


def test_refusals_are_counted_by_their_code_and_a_pci_body_is_never_read() -> None:
    card_body = exchange(b'{"amount": 2000, "currency": "usd", "card": "4111111111111111"}')
    # Never rescued in practice; even so, a PCI-blocked body gives no capital.
    pci = counts_of(outcome(400, "retry", ex=card_body, error="pci_card_number"))
    assert pci == {"requests": 1, "pci_blocked": 1, "rescued:retry": 1}
    limited = counts_of(outcome(429, error="rate_limited"))
    assert limited == {"requests": 1, "rate_limited": 1}
    refused = counts_of(outcome(401, error="unauthorized", host=""))
    assert refused == {"requests": 1}


# -- StatsCounter --------------------------------------------------------------------


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock(T0)


async def test_counts_are_summed_per_hour_and_flushed_to_the_store(fake: FakeClock) -> None:
    store = MemoryStore(fake.clock())
    stats = StatsCounter(store, fake.clock())
    form = exchange(b"amount=500&currency=usd", "application/x-www-form-urlencoded")
    stats.observe(outcome(200, "retry", ex=attempted(("https://api.test/", "503")), time=T0 - 3600))
    stats.observe(outcome(200, "cache", ex=form))
    stats.observe(outcome(200, "retry", ex=exchange(b'{"amount":700,"currency":"eur"}')))
    stats.observe(outcome(503))
    assert await store.stats_read(0) == {}  # nothing written before a flush

    await stats.flush()

    assert await store.stats_read(0) == {
        "requests": 4,
        "ok": 3,
        "ok_rescued": 3,
        "rescued:retry": 2,
        "rescued:cache": 1,
        "upstream_errors:api.test": 1,
        "capital:usd": 2500,
        "capital:eur": 700,
    }
    # The first request fell in the hour before: a window from this hour leaves it out.
    this_hour = await store.stats_read(HOUR)
    assert this_hour["requests"] == 3 and this_hour["capital:usd"] == 500
    assert "upstream_errors:api.test" not in this_hour

    await stats.flush()  # nothing waiting: nothing added twice
    assert (await store.stats_read(0))["requests"] == 4


class FlakyStore:
    """A MemoryStore whose stats_add fails while `down`, counting the calls."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.down = True
        self.calls = 0

    async def stats_add(self, hour: int, counts: Mapping[str, int]) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("redis is gone: redis://user:hunter2@db")
        await self.store.stats_add(hour, counts)


async def test_counts_the_store_refused_are_written_at_the_next_flush_once(
    fake: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    memory = MemoryStore(fake.clock())
    flaky = FlakyStore(memory)
    stats = StatsCounter(flaky, fake.clock())  # type: ignore[arg-type]
    stats.observe(outcome(200, "retry", ex=exchange(b'{"amount":700,"currency":"eur"}')))
    with caplog.at_level(logging.WARNING, "mirapi.stats"):
        await stats.flush()
        stats.observe(outcome(200))
        await stats.flush()
    assert flaky.calls == 2
    assert len(caplog.records) == 1  # once per run of failures
    assert "StoreUnavailable" in caplog.text and "hunter2" not in caplog.text

    flaky.down = False
    await stats.flush()
    assert await memory.stats_read(0) == {
        "requests": 2,
        "ok": 2,
        "ok_rescued": 1,
        "rescued:retry": 1,
        "capital:eur": 700,
    }
    await stats.flush()
    assert (await memory.stats_read(0))["requests"] == 2


async def test_counts_older_than_the_kept_hours_are_given_up_while_the_store_refuses(
    fake: FakeClock,
) -> None:
    memory = MemoryStore(fake.clock())
    flaky = FlakyStore(memory)
    stats = StatsCounter(flaky, fake.clock())  # type: ignore[arg-type]
    stats.observe(outcome(200, time=T0))
    await stats.flush()
    fake.advance(49 * 3600)
    stats.observe(outcome(200, time=fake.t))
    await stats.flush()  # the first hour is now past PENDING_HOURS: dropped
    flaky.down = False
    await stats.flush()
    assert (await memory.stats_read(0))["requests"] == 1


async def test_new_names_past_the_limit_are_dropped_and_counted(fake: FakeClock) -> None:
    store = MemoryStore(fake.clock())
    stats = StatsCounter(store, fake.clock(), limit=3)
    stats.observe(outcome(200))  # requests, ok: 2 names
    stats.observe(
        outcome(502, ex=attempted(("https://a.test/", "502"), ("https://b.test/", "502")))
    )
    assert stats.dropped == 1  # a.test took the last slot, b.test was dropped
    await stats.flush()
    assert await store.stats_read(0) == {"requests": 2, "ok": 1, "upstream_errors:a.test": 1}


async def test_the_background_task_flushes_and_stop_writes_the_rest(fake: FakeClock) -> None:
    store = MemoryStore(fake.clock())
    stats = StatsCounter(store, fake.clock(), interval=0.02)
    await stats.start()
    try:
        stats.observe(outcome(200))
        for _ in range(100):
            if await store.stats_read(0):
                break
            await asyncio.sleep(0.01)
        assert await store.stats_read(0) == {"requests": 1, "ok": 1}
    finally:
        stats.observe(outcome(500))
        await stats.stop()
    assert (await store.stats_read(0))["requests"] == 2


class StuckStore:
    """A MemoryStore whose first stats_add hangs (until cancelled)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.entered = asyncio.Event()
        self.calls = 0

    async def stats_add(self, hour: int, counts: Mapping[str, int]) -> None:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            await asyncio.sleep(30)
        await self.store.stats_add(hour, counts)


async def test_stop_during_a_flush_still_writes_its_counts_once(fake: FakeClock) -> None:
    memory = MemoryStore(fake.clock())
    stuck = StuckStore(memory)
    stats = StatsCounter(stuck, fake.clock(), interval=0.01)  # type: ignore[arg-type]
    await stats.start()
    stats.observe(outcome(200))
    await asyncio.wait_for(stuck.entered.wait(), 5)
    await asyncio.wait_for(stats.stop(), 5)
    assert stuck.calls == 2
    assert await memory.stats_read(0) == {"requests": 1, "ok": 1}


async def test_observe_never_raises(
    fake: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stats = StatsCounter(MemoryStore(fake.clock()), fake.clock())

    def broken(_: Outcome) -> dict[str, int]:
        raise RuntimeError("a bug")

    monkeypatch.setattr("sidecar.observability.stats.counts_of", broken)
    with caplog.at_level(logging.ERROR, "mirapi.stats"):
        stats.observe(outcome(200))
    assert "could not be counted" in caplog.text


# -- summarize -----------------------------------------------------------------------


def test_summarize_gives_the_stats_json_shape() -> None:
    counters = {
        "requests": 10,
        "ok": 8,
        "ok_rescued": 3,
        "rescued:retry": 2,
        "rescued:cache": 1,
        "rescued:failover": 1,
        "upstream_errors:b.test": 4,
        "upstream_errors:a.test": 1,
        "capital:usd": 2500,
        "capital:eur": 700,
        "pci_blocked": 1,
    }
    summary: dict[str, Any] = summarize(counters, ["b.test", "a.test"], 3)
    assert summary == {
        "requests": 10,
        "rescued": {"cache": 1, "failover": 1, "retry": 2},
        "success_rate": {"with_rescues": 0.8, "without_rescues": 0.5},
        "upstream_errors": {"a.test": 1, "b.test": 4},
        "breakers_open": ["a.test", "b.test"],
        "queue_depth": 3,
        "rescued_capital": {"eur": 700, "usd": 2500},
        "pci_blocked": 1,
        "rate_limited": 0,
    }


def test_summarize_with_no_requests_has_no_rate() -> None:
    summary = summarize({}, 2, None)
    assert summary["requests"] == 0
    assert summary["success_rate"] == {"with_rescues": None, "without_rescues": None}
    assert summary["breakers_open"] == 2 and summary["queue_depth"] is None
    assert summary["rescued"] == {} and summary["rescued_capital"] == {}
    assert summarize({}, None, 0)["breakers_open"] is None
