"""Tables never cut what a user must copy; piped output is JSON lines (SPEC §9, issue 13).

Every listing command runs as a real `mirapi` process on a pseudo-terminal
80 and 120 columns wide, and piped. Ids are long on purpose (a client's own
X-Request-ID, a job id, a route name): on the terminal each must appear
whole in its column, folded onto several lines if need be but never ended
with "…"; piped, each row is one JSON object a line with every field.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mirapi_cli import output
from mirapi_cli.commands.events import table_of
from sidecar.config import Settings
from sidecar.jobs.model import FAILED, Job, JobRequest, public_view
from sidecar.observability.events import RESCUE, UPSTREAM_ERROR, Event
from sidecar.store import store_for
from tests.support.cli import REPO, on_terminal, run_cli

# One worker runs this module's tests: its module-scoped sidecar (or data
# dir) is made once, not once per worker.
pytestmark = pytest.mark.xdist_group("cli/test_tables")

T0 = 1_700_000_000.0
PASSPHRASE = "correct horse battery staple"
# What a client sends as its own X-Request-ID, and what the sidecar makes.
LONG_ID = "checkout-2c5d068536a1f00e-7f3b9e21-retry-of-order-8841"
SHORT_ID = "2c5d068536a1f00e"
JOB_ID = "job-01HZX3M9Q4V7T2K8R5N6P0W1YB-2c5d068536a1f00e"
ROUTE = "payments-eu-west-1-primary-with-failover-to-us-east"
SECRET = "stripe-live-restricted-key-for-the-refunds-service"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def env_for(data_dir: Path) -> dict[str, str]:
    config = data_dir.parent / "config.toml"
    config.write_text("")
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NO_COLOR": "1",
        "MIRAPI_DATA_DIR": str(data_dir),
        "MIRAPI_CONFIG": str(config),
        "MIRAPI_MASTER_KEY": PASSPHRASE,
    }
    for name in ("MIRAPI_REDIS", "COLUMNS", "LINES"):
        environment.pop(name, None)
    return environment


def piped(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`mirapi ARGS` with stdout a pipe (in this process: `run_cli`)."""
    return run_cli(env_for(data_dir), args, stdin=stdin)


def screen_of(data_dir: Path, columns: int, *args: str) -> str:
    """`mirapi ARGS` on a pseudo-terminal `columns` wide: the screen's text."""
    code, seen, err = on_terminal(args, env_for(data_dir), columns=columns)
    assert code == 0, err
    return ANSI.sub("", seen).replace("\r\n", "\n")


def cells(screen: str, index: int) -> list[str]:
    """Column `index`'s (0 first) text on each body line of the table on `screen`.

    The column's edges are read from the top border (┏━━┳━━┓).
    """
    lines = screen.splitlines()
    top = next(line for line in lines if line.startswith("┏"))
    edges = [at for at, char in enumerate(top) if char in "┏┳┓"]
    body = [line for line in lines[lines.index(top) :] if line.startswith("│")]
    return [line[edges[index] + 1 : edges[index + 1]].strip() for line in body]


def column(screen: str, index: int) -> str:
    """Column `index`'s text with its folds joined: an id folded over three lines reads whole."""
    return "".join(cells(screen, index))


def assert_fits(screen: str, columns: int) -> None:
    """Nothing is cut: no line wider than the terminal, no ellipsis."""
    assert "…" not in screen
    assert all(len(line) <= columns for line in screen.splitlines()), screen


# -- seeding ---------------------------------------------------------------------------


def an_event(index: int, request_id: str, **changes: Any) -> Event:
    fields: dict[str, Any] = {
        "time": T0 + index,
        "kind": UPSTREAM_ERROR,
        "reason": "upstream_timeout",
        "request_id": request_id,
        "route": ROUTE,
        "host": "api.stripe.com",
        "status": 504,
        "attempts": 3,
        "latency_ms": 30001.5,
        "detail": "no answer within 30 s from any endpoint",
    }
    return Event(**(fields | changes))


def a_job(job_id: str, age: float) -> Job:
    created = time.time() - age
    return Job(
        id=job_id,
        request=JobRequest("POST", "/v1/charges", "", (("x-target-url", "https://a.test"),), b"x"),
        callback_url="https://hooks.example.com/mirapi/callbacks/charges",
        created_at=created,
        retry_until=created + 3600,
        idempotency_key=f"key-{job_id}",
        due_at=created,
    ).with_(status=FAILED, attempts=5, last_error="upstream answered 503", finished_at=created)


async def seed(data_dir: Path) -> None:
    store = store_for(Settings(data_dir=data_dir))
    await store.open()
    try:
        events = [
            an_event(0, LONG_ID),
            an_event(1, SHORT_ID, kind=RESCUE, reason="retry", status=200),
        ]
        await store.events_add([one.encode() for one in events])
        for one in (a_job(JOB_ID, 20), a_job("j-2", 10)):
            await store.job_add(one)
            await store.job_save(one, None)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir with an event, a job, a key, a route and a secret of long ids."""
    data = tmp_path_factory.mktemp("tables") / "data"
    asyncio.run(seed(data))
    made = piped(data, "keys", "create", "--name", "billing-service", "--json")
    assert made.returncode == 0, made.stderr
    added = piped(
        data,
        "routes",
        "add",
        ROUTE,
        "--endpoint",
        "https://api.stripe.com",
        "--endpoint",
        "https://eu.api.stripe.com/v1",
    )
    assert added.returncode == 0, added.stderr
    stored = piped(data, "secrets", "add", SECRET, "--host", "api.stripe.com", stdin="sk_x\n")
    assert stored.returncode == 0, stored.stderr
    return data


def key_id(data_dir: Path) -> str:
    [key] = json.loads(piped(data_dir, "keys", "list", "--json").stdout)
    return str(key["id"])


# -- on a terminal ---------------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize(
    ("args", "index", "ids"),
    [
        (("events", "tail"), 3, (LONG_ID, SHORT_ID)),
        (("jobs", "list"), 0, (JOB_ID, "j-2")),
        (("routes", "list"), 0, (ROUTE,)),
        (("secrets", "list"), 0, (SECRET,)),
    ],
    ids=["events", "jobs", "routes", "secrets"],
)
def test_ids_are_whole_on_a_terminal(
    data_dir: Path, columns: int, args: tuple[str, ...], index: int, ids: tuple[str, ...]
) -> None:
    screen = screen_of(data_dir, columns, *args)
    assert_fits(screen, columns)
    shown = column(screen, index)
    for whole in ids:
        assert whole in shown, screen


@pytest.mark.parametrize("columns", [80, 120])
def test_key_ids_are_whole_on_a_terminal(data_dir: Path, columns: int) -> None:
    screen = screen_of(data_dir, columns, "keys", "list")
    assert_fits(screen, columns)
    assert key_id(data_dir) in cells(screen, 0)


def test_a_wide_terminal_keeps_a_generated_id_on_one_line(data_dir: Path) -> None:
    # 120 columns: the sidecar's own 16-character ids need no fold at all.
    screen = screen_of(data_dir, 120, "events", "tail")
    assert SHORT_ID in cells(screen, 3)
    # The columns left out to make room are named, and the JSON has them.
    assert "not shown at this width" in screen and "--json" in screen


def test_stats_on_a_terminal(data_dir: Path) -> None:
    screen = screen_of(data_dir, 80, "stats")
    assert "MirApi stats" in screen and "{" not in screen


# -- piped -------------------------------------------------------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize(
    ("args", "field", "ids"),
    [
        (("events", "tail"), "request_id", [LONG_ID, SHORT_ID]),
        (("jobs", "list"), "id", ["j-2", JOB_ID]),
        (("routes", "list"), "name", [ROUTE]),
        (("secrets", "list"), "name", [SECRET]),
    ],
    ids=["events", "jobs", "routes", "secrets"],
)
def test_piped_output_is_json_lines(
    data_dir: Path, args: tuple[str, ...], field: str, ids: list[str]
) -> None:
    done = piped(data_dir, *args)
    assert done.returncode == 0, done.stderr
    rows = json_lines(done.stdout)
    assert [row[field] for row in rows] == ids
    with_json = piped(data_dir, *args, "--json")
    # --json: the documented output, the same rows (events: JSON lines too).
    documented = (
        json_lines(with_json.stdout) if args[0] == "events" else json.loads(with_json.stdout)
    )
    assert documented == rows


def test_piped_jobs_and_keys_carry_every_field(data_dir: Path) -> None:
    jobs = json_lines(piped(data_dir, "jobs", "list").stdout)
    assert jobs[1] == public_view(a_job(JOB_ID, 0)) | {
        key: jobs[1][key] for key in ("created_at", "finished_at", "next_attempt_at")
    }
    [key] = json_lines(piped(data_dir, "keys", "list").stdout)
    assert key["id"] == key_id(data_dir) and key["name"] == "billing-service"
    [stats] = json_lines(piped(data_dir, "stats").stdout)
    assert {"requests", "rescued", "rescued_capital"} <= stats.keys()


def test_piped_and_empty_says_so_on_stderr(tmp_path: Path) -> None:
    done = piped(tmp_path / "empty", "jobs", "list")
    assert (done.returncode, done.stdout) == (0, "")
    assert "no jobs" in done.stderr


# -- the renderable itself ---------------------------------------------------------------


@pytest.mark.parametrize("width", [40, 80, 120])
def test_a_fitted_table_folds_an_id_rather_than_cut_it(width: int) -> None:
    events = [an_event(0, LONG_ID), an_event(1, SHORT_ID)]
    console = Console(width=width, force_terminal=True, no_color=True, record=True)
    console.print(table_of(events))
    screen = ANSI.sub("", console.export_text())
    assert_fits(screen, width)
    shown = column(screen, 3)
    assert LONG_ID in shown and SHORT_ID in shown


def test_optional_columns_go_first_and_are_named() -> None:
    table = output.table(("ID", "Note"), [(JOB_ID, "x " * 40)], ids=("ID",), optional=("Note",))
    console = Console(width=len(JOB_ID) + 10, force_terminal=True, no_color=True, record=True)
    console.print(table)
    screen = console.export_text()
    assert table.hidden == ["Note"]
    assert JOB_ID in screen.splitlines()[3] and "Note" in screen
