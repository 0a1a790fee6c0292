"""`mirapi stats` through the real CLI, on counts put straight into the data
dir's embedded store (the one the command opens), as a sidecar's flush would."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mirapi_cli.commands.stats import money, render, since_hour_of
from mirapi_cli.errors import CliError
from sidecar.config import Settings
from sidecar.jobs.model import Job, JobRequest
from sidecar.store import store_for
from tests.support.cli import run_mirapi

NOW = time.time()
HOUR = int(NOW // 3600)


async def seed(data_dir: Path) -> None:
    """Counts in this hour and five hours ago, a broken host's breaker, a queued job."""
    store = store_for(Settings(data_dir=data_dir))
    await store.open()
    try:
        await store.stats_add(
            HOUR - 5,
            {
                "requests": 6,
                "ok": 2,
                "ok_rescued": 1,
                "rescued:retry": 1,
                "upstream_errors:down.test": 5,
                "capital:usd": 2000,
            },
        )
        await store.stats_add(
            HOUR,
            {
                "requests": 4,
                "ok": 4,
                "ok_rescued": 2,
                "rescued:retry": 1,
                "rescued:failover": 1,
                "upstream_errors:flaky.test:8443": 2,
                "capital:usd": 500,
                "capital:eur": 700,
                "rate_limited": 1,
            },
        )
        for _ in range(3):
            await store.breaker_record("down.test", False, 3)  # open
        await store.breaker_record("flaky.test:8443", False, 3)  # one failure: still closed
        created = NOW - 10
        await store.job_add(
            Job(
                id="j1",
                request=JobRequest("POST", "/v1/x", "", (("x-target-url", "https://a.test"),), b""),
                callback_url="https://hooks.test/cb",
                created_at=created,
                retry_until=created + 3600,
                idempotency_key="k1",
                due_at=created,
            )
        )
    finally:
        await store.close()


async def mirapi(data_dir: Path, *args: str) -> tuple[int, str, str]:
    code, out, err = await run_mirapi(data_dir, "stats", *args)
    return code, out.decode(), err


async def test_stats_json_sums_every_kept_hour_and_since_only_the_recent_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    data = tmp_path / "data"
    await seed(data)

    (code, out, err), (since_code, since_out, _), (human_code, human, _) = await asyncio.gather(
        mirapi(data, "--json"), mirapi(data, "--json", "--since", "1h"), mirapi(data)
    )

    assert code == 0, err
    every: dict[str, Any] = json.loads(out)
    assert every == {
        "requests": 10,
        "rescued": {"failover": 1, "retry": 2},
        "success_rate": {"with_rescues": 0.6, "without_rescues": 0.3},
        "upstream_errors": {"down.test": 5, "flaky.test:8443": 2},
        "breakers_open": ["down.test"],
        "queue_depth": 1,
        "rescued_capital": {"eur": 700, "usd": 2500},
        "pci_blocked": 0,
        "rate_limited": 1,
    }

    assert since_code == 0
    recent = json.loads(since_out)
    assert recent["requests"] == 4
    assert recent["rescued_capital"] == {"eur": 700, "usd": 500}
    assert recent["upstream_errors"] == {"flaky.test:8443": 2}
    # Breakers open now, whenever their errors were counted.
    assert recent["breakers_open"] == ["down.test"]

    # Piped without --json: the same object, as one JSON line.
    assert human_code == 0
    assert human.count("\n") == 1 and json.loads(human) == every
    # On a terminal: rich tables (rendered here as a terminal would show them).
    console = Console(width=100, force_terminal=True, no_color=True, record=True)
    console.print(render(every, 0))
    shown = console.export_text()
    for text in ("MirApi stats", "Rescued capital", "25.00", "7.00", "USD", "EUR", "60.00%"):
        assert text in shown, text
    assert "down.test" in shown and "failover" in shown


async def test_stats_on_an_empty_store(tmp_path: Path) -> None:
    code, out, err = await mirapi(tmp_path / "data", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["requests"] == 0 and summary["rescued_capital"] == {}
    assert summary["success_rate"] == {"with_rescues": None, "without_rescues": None}
    assert summary["breakers_open"] == [] and summary["queue_depth"] == 0


async def test_a_bad_since_is_one_line_naming_the_option(tmp_path: Path) -> None:
    code, out, err = await mirapi(tmp_path / "data", "--since", "soon")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "--since" in err and "Traceback" not in err


def test_since_is_the_hour_bucket_the_duration_reaches_back_to() -> None:
    now = 1000 * 3600 + 1800.0  # half past hour 1000
    assert since_hour_of("1h", now) == 999
    assert since_hour_of("30m", now) == 1000
    assert since_hour_of(" 7d ", now) == 1000 - 7 * 24
    assert since_hour_of("10000d", now) == 0
    for bad, why in (
        ("60", "needs a unit"),
        ("-1h", "needs a unit|not a duration"),
        ("0h", "above zero"),
        ("soon", "not a duration"),
    ):
        with pytest.raises(CliError, match=why):
            since_hour_of(bad, now)


def test_money_follows_the_currency_s_minor_unit() -> None:
    assert money("usd", 2500) == "25.00"
    assert money("usd", 5) == "0.05"
    assert money("jpy", 1200) == "1,200"
    assert money("kwd", 1500) == "1.500"
    assert money("eur", 123456789) == "1,234,567.89"
