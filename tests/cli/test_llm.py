"""`mirapi llm budget set | list | rm`, `mirapi llm spend` and the LLM part of
`mirapi stats`, in this process through the real entry point (`main.run`,
click's runner), on the test's data dir (the embedded store's SQLite) or a
private redis-server with `--redis`. Spend is put straight into the store
the command opens, as a sidecar's settled calls would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mirapi_cli import output
from mirapi_cli.main import run
from sidecar.clock import Clock
from sidecar.config import Settings
from sidecar.llm.budgets import utc_day
from sidecar.store import store_for
from sidecar.store.base import Store
from sidecar.store.redis import RedisStore

CHAT = "route:chat"
SCOPES = ("all", CHAT, "key:0123456789ab")


class Run:
    """One finished `mirapi` command."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def lines(self) -> list[Any]:
        assert self.code == 0, self.err
        return [json.loads(line) for line in self.out.splitlines()]

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


def mirapi(data_dir: Path, *args: str) -> Run:
    """`mirapi ARGS` on `data_dir` with an empty config; stdout is a pipe, not a terminal."""
    config = data_dir.parent / "empty.toml"
    config.write_text("")
    env = {"MIRAPI_DATA_DIR": str(data_dir), "MIRAPI_CONFIG": str(config), "NO_COLOR": "1"}
    runner = CliRunner()
    with runner.isolation(env={**env, "MIRAPI_REDIS": None}) as (out, err, _):
        try:
            run(list(args))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        return Run(code, out.getvalue().decode(), err.getvalue().decode())


def on_store(data_dir: Path, work: Callable[[Store], Awaitable[None]]) -> None:
    async def go() -> None:
        store = store_for(Settings(data_dir=data_dir))
        await store.open()
        try:
            await work(store)
        finally:
            await store.close()

    asyncio.run(go())


def settle_calls(data_dir: Path, *costs: int, scopes: tuple[str, ...] = SCOPES) -> None:
    """One settled call per cost (nano-USD) today, 1000 input and 200 output tokens each."""

    async def work(store: Store) -> None:
        day = utc_day(time.time())
        for i, cost in enumerate(costs):
            rid = f"call-{i}-{cost}"
            assert await store.reserve(scopes, cost, day, rid, time.time() + 600) is None
            await store.settle(rid, scopes, day, cost, 1000, 200)

    on_store(data_dir, work)


# -- budgets ------------------------------------------------------------------------


def test_set_list_and_rm_a_budget(tmp_path: Path) -> None:
    data = tmp_path / "data"

    done = mirapi(data, "llm", "budget", "set", CHAT, "--usd-per-day", "5")
    assert done.code == 0, done.err
    assert done.out == (
        "budget of route:chat set: 5 USD a day (UTC);"
        " no sidecar runs on this store (one that starts loads it)\n"
    )
    assert mirapi(
        data, "llm", "budget", "set", "all", "--usd-per-day", "0.25", "--json"
    ).json() == {
        "scope": "all",
        "usd_per_day": 0.25,
        "sidecars": {"live": 0, "acknowledged": 0, "not_acknowledged": []},
    }
    # Setting again replaces.
    assert mirapi(data, "llm", "budget", "set", CHAT, "--usd-per-day", "7.5").code == 0

    assert mirapi(data, "llm", "budget", "list", "--json").json() == [
        {"scope": "all", "usd_per_day": 0.25},
        {"scope": CHAT, "usd_per_day": 7.5},
    ]
    # Piped: JSON lines.
    assert mirapi(data, "llm", "budget", "list").lines() == [
        {"scope": "all", "usd_per_day": 0.25},
        {"scope": CHAT, "usd_per_day": 7.5},
    ]

    removed = mirapi(data, "llm", "budget", "rm", CHAT)
    assert (removed.code, removed.out) == (
        0,
        "budget of route:chat removed; no sidecar runs on this store (one that starts loads it)\n",
    )
    again = mirapi(data, "llm", "budget", "rm", CHAT)
    assert again.code == 1
    assert "no budget for 'route:chat'" in again.err
    assert mirapi(data, "llm", "budget", "list", "--json").json() == [
        {"scope": "all", "usd_per_day": 0.25}
    ]


def test_an_empty_budget_list_says_how_to_set_one(tmp_path: Path) -> None:
    listed = mirapi(tmp_path / "data", "llm", "budget", "list")

    assert (listed.code, listed.out) == (0, "")
    assert "mirapi llm budget set SCOPE --usd-per-day X" in listed.err
    assert mirapi(tmp_path / "data", "llm", "budget", "list", "--json").json() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set", "chat", "--usd-per-day", "1"), "not one of route:NAME, key:ID or all"),
        (("set", "route:", "--usd-per-day", "1"), "no route name"),
        (("set", "key:a b", "--usd-per-day", "1"), "without spaces"),
        (("set", "all", "--usd-per-day", "0"), "above zero"),
        (("set", "all", "--usd-per-day", "five"), "not a decimal amount of USD"),
        (("set", "all", "--usd-per-day", "0.0000000001"), "more than 9 decimal places"),
        (("set", "all", "--usd-per-day", "2000000"), "above the most allowed"),
        (("rm", "routes:chat"), "not one of route:NAME, key:ID or all"),
    ],
)
def test_a_bad_scope_or_amount_is_refused_and_nothing_is_set(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    data = tmp_path / "data"

    refused = mirapi(data, "llm", "budget", *args)

    assert refused.code == 1
    assert message in refused.err
    assert mirapi(data, "llm", "budget", "list", "--json").json() == []


def test_a_missing_usd_per_day_is_a_usage_error(tmp_path: Path) -> None:
    refused = mirapi(tmp_path / "data", "llm", "budget", "set", "all")

    assert refused.code == 2
    assert "--usd-per-day" in refused.err


# -- spend --------------------------------------------------------------------------


def test_spend_shows_each_scope_with_its_budget_and_tokens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert mirapi(data, "llm", "budget", "set", CHAT, "--usd-per-day", "5").code == 0
    assert mirapi(data, "llm", "budget", "set", "route:idle", "--usd-per-day", "1").code == 0
    settle_calls(data, 842_000, 50_000_000)
    today = utc_day(time.time())

    rows = mirapi(data, "llm", "spend", "--json").json()

    by_scope = {row["scope"]: row for row in rows}
    assert by_scope[CHAT] == {
        "scope": CHAT,
        "day": today,
        "spent_usd": 0.050842,
        "reserved_usd": 0,
        "limit_usd": 5,
        "requests": 2,
        "input_tokens": 2000,
        "output_tokens": 400,
    }
    assert by_scope["all"]["limit_usd"] is None and by_scope["all"]["spent_usd"] == 0.050842
    # A budget with nothing spent today still shows, at zero.
    assert by_scope["route:idle"]["spent_usd"] == 0 and by_scope["route:idle"]["limit_usd"] == 1
    assert [row["scope"] for row in rows] == sorted(by_scope)


def test_spend_is_filtered_by_scope_and_day(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settle_calls(data, 1_000)
    today = utc_day(time.time())

    only_chat = mirapi(data, "llm", "spend", "--scope", CHAT).lines()
    assert [(row["scope"], row["day"], row["spent_usd"]) for row in only_chat] == [
        (CHAT, today, 0.000001)
    ]
    assert (
        mirapi(data, "llm", "spend", "--day", today, "--scope", "all").lines()[0]["requests"] == 1
    )
    other_day = mirapi(data, "llm", "spend", "--day", "2020-01-01")
    assert (other_day.code, other_day.out) == (0, "")
    assert "no LLM spend recorded on 2020-01-01" in other_day.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--day", "2026-13-01"), "is not a date"),
        (("--day", "yesterday"), "is not YYYY-MM-DD"),
        (("--scope", "everything"), "not one of route:NAME, key:ID or all"),
    ],
)
def test_spend_refuses_a_bad_day_or_scope(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    refused = mirapi(tmp_path / "data", "llm", "spend", *args)

    assert refused.code == 1
    assert message in refused.err


def test_spend_on_a_terminal_is_a_table_of_plain_decimals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    assert mirapi(data, "llm", "budget", "set", CHAT, "--usd-per-day", "5").code == 0
    settle_calls(data, 842)
    monkeypatch.setattr(output, "is_terminal", lambda: True)

    shown = mirapi(data, "llm", "spend", "--scope", CHAT)

    assert shown.code == 0, shown.err
    assert "LLM spend" in shown.out
    assert "route:chat" in shown.out
    assert "0.000000842" in shown.out  # never 8.42E-7
    assert " 5 " in shown.out


# -- stats --------------------------------------------------------------------------


def test_stats_adds_todays_llm_spend_per_route(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settle_calls(data, 250_000_000, 5_000, scopes=("all", CHAT))
    settle_calls(data, 1_000_000, scopes=("all", "route:claude", "key:0123456789ab"))

    summary = mirapi(data, "stats", "--json").json()

    assert summary["llm_today"] == {
        "day": utc_day(time.time()),
        "routes": {
            "chat": {
                "spent_usd": 0.250005,
                "requests": 2,
                "input_tokens": 2000,
                "output_tokens": 400,
            },
            "claude": {
                "spent_usd": 0.001,
                "requests": 1,
                "input_tokens": 1000,
                "output_tokens": 200,
            },
        },
    }
    # The rest of stats is as before.
    assert summary["requests"] == 0 and summary["rescued_capital"] == {}


def test_stats_without_llm_calls_today_has_no_llm_part(tmp_path: Path) -> None:
    summary = mirapi(tmp_path / "data", "stats", "--json").json()

    assert "llm_today" not in summary


def test_stats_human_view_has_an_llm_table(tmp_path: Path) -> None:
    from mirapi_cli.commands.stats import llm_today, render
    from sidecar.observability.stats import summarize
    from sidecar.store.budgets import SpendRow

    today = utc_day(time.time())
    summary = summarize({}, [], 0)
    summary["llm_today"] = llm_today(today, [SpendRow(CHAT, today, 1_000, 0, None, 3, 1200, 350)])
    console = Console(width=120, record=True, no_color=True)

    console.print(render(summary, 0))

    text = console.export_text()
    assert f"LLM spend today ({today}, UTC)" in text
    assert "chat" in text and "0.000001" in text and "1200" in text and "350" in text


# -- Redis --------------------------------------------------------------------------


def test_budgets_set_through_redis_are_what_every_sidecar_reads(
    tmp_path: Path, redis_url: str
) -> None:
    data = tmp_path / "data"

    done = mirapi(data, "llm", "budget", "set", CHAT, "--usd-per-day", "0.1", "--redis", redis_url)
    assert done.code == 0, done.err

    async def sidecar_view() -> Any:
        store = RedisStore(redis_url, Clock())
        await store.open()
        try:
            day = utc_day(time.time())
            first = await store.reserve(SCOPES, 60_000_000, day, "a", time.time() + 60)
            second = await store.reserve(SCOPES, 60_000_000, day, "b", time.time() + 60)
            return first, second
        finally:
            await store.close()

    first, second = asyncio.run(sidecar_view())
    assert first is None
    assert second is not None and second.scope == CHAT and second.limit_nano == 100_000_000
    spent = mirapi(data, "llm", "spend", "--scope", CHAT, "--json", "--redis", redis_url).json()
    assert spent[0]["reserved_usd"] == 0.06 and spent[0]["limit_usd"] == 0.1
    # The data dir's own store knows nothing of it.
    assert mirapi(data, "llm", "budget", "list", "--json").json() == []
