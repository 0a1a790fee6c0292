"""`mirapi events tail` through the real CLI, on a data dir's embedded store.

Events are written straight into the store `mirapi events` opens (the data
dir's SQLite) with `sidecar.store.store_for`, while the command runs as a
real `mirapi` process: piped (JSON lines), or on a pseudo-terminal for the
table and the live view. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import Settings
from sidecar.observability.events import BREAKER, JOB, RESCUE, UPSTREAM_ERROR, Event
from sidecar.store import store_for
from sidecar.store.base import Store
from tests.support.cli import REPO, on_terminal, run_mirapi

WAIT = 10.0
T0 = 1_700_000_000.0


def event(index: int, kind: str = RESCUE, **changes: Any) -> Event:
    fields: dict[str, Any] = {
        "time": T0 + index,
        "kind": kind,
        "reason": "retry" if kind == RESCUE else None,
        "request_id": f"req-{index}",
        "host": "api.test",
        "status": 200,
        "attempts": 2,
        "latency_ms": 12.5,
    }
    return Event(**(fields | changes))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def store(data_dir: Path) -> AsyncIterator[Store]:
    """The data dir's embedded store, open in this process."""
    opened = store_for(Settings(data_dir=data_dir))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def add(store: Store, *events: Event) -> None:
    await store.events_add([one.encode() for one in events])


async def tail_json(data_dir: Path, *args: str) -> list[dict[str, Any]]:
    code, out, err = await run_mirapi(data_dir, "events", "tail", *args)
    assert code == 0, err
    return [json.loads(line) for line in out.decode().splitlines()]


def env_for(data_dir: Path) -> dict[str, str]:
    config = data_dir.parent / "config.toml"
    config.write_text("")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NO_COLOR": "1",
        "MIRAPI_DATA_DIR": str(data_dir),
        "MIRAPI_CONFIG": str(config),
        "COLUMNS": "200",
        "LINES": "40",
    }
    env.pop("MIRAPI_REDIS", None)
    return env


# -- recent events --------------------------------------------------------------------


async def test_the_last_n_events_oldest_first_as_json_lines(store: Store, data_dir: Path) -> None:
    await add(store, *(event(index) for index in range(25)))
    await add(store, event(25, route="pay", detail="x"))

    lines, piped, default = await asyncio.gather(
        tail_json(data_dir, "-n", "3", "--json"),
        tail_json(data_dir, "-n", "3"),
        tail_json(data_dir),
    )

    assert [line["request_id"] for line in lines] == ["req-23", "req-24", "req-25"]
    assert lines[-1] == {
        "time": "2023-11-14T22:13:45.000Z",
        "kind": "rescue",
        "reason": "retry",
        "request_id": "req-25",
        "route": "pay",
        "host": "api.test",
        "status": 200,
        "attempts": 2,
        "latency_ms": 12.5,
        "detail": "x",
    }
    # Piped without --json: the same lines.
    assert piped == lines
    # Twenty by default.
    assert [line["request_id"] for line in default] == [f"req-{i}" for i in range(6, 26)]


async def test_kind_and_route_filter_before_counting(store: Store, data_dir: Path) -> None:
    await add(
        store,
        event(0, route="pay"),
        event(1, BREAKER, reason="open", detail="closed->open"),
        event(2, route="search"),
        event(3, UPSTREAM_ERROR, reason="server_error", status=503, route="pay"),
        *(event(index, JOB, reason="succeeded") for index in range(4, 40)),
    )

    rescues, pay, both, none = await asyncio.gather(
        tail_json(data_dir, "--kind", "rescue"),
        tail_json(data_dir, "--route", "pay", "-n", "5"),
        tail_json(data_dir, "--route", "pay", "--kind", "upstream_error"),
        tail_json(data_dir, "--kind", "pci_block"),
    )
    assert [line["request_id"] for line in rescues] == ["req-0", "req-2"]
    assert [line["request_id"] for line in pay] == ["req-0", "req-3"]
    assert [line["request_id"] for line in both] == ["req-3"]
    assert none == []


async def test_an_empty_log_prints_nothing_and_succeeds(data_dir: Path) -> None:
    assert await tail_json(data_dir, "--json") == []


async def test_an_entry_that_is_not_an_event_is_skipped(store: Store, data_dir: Path) -> None:
    await store.events_add([event(0).encode(), b"\xff garbage", b'{"kind": 1}', event(1).encode()])
    lines = await tail_json(data_dir, "--json")
    assert [line["request_id"] for line in lines] == ["req-0", "req-1"]


async def test_a_bad_kind_or_count_is_refused(data_dir: Path) -> None:
    (code, out, err), (usage, _, problem) = await asyncio.gather(
        run_mirapi(data_dir, "events", "tail", "--kind", "rescues"),
        run_mirapi(data_dir, "events", "tail", "-n", "-1"),
    )
    assert code == 1 and out == b""
    assert "--kind" in err and "rescue, breaker" in err and "Traceback" not in err
    assert usage == 2 and "-n" in problem


async def test_an_unreachable_redis_is_one_error_naming_the_store(data_dir: Path) -> None:
    # Port 1 on loopback: refused at once. The password must not be echoed.
    url = "redis://:hunter2@127.0.0.1:1/0"
    code, out, err = await run_mirapi(data_dir, "events", "tail", "--json", "--redis", url)
    assert code == 1 and out == b""
    assert "store is unavailable" in err
    assert "hunter2" not in err and "Traceback" not in err


# -- following -----------------------------------------------------------------------


class Follower:
    """`mirapi events tail -f ARGS` piped, read line by line with a bounded wait."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, data_dir: Path, *args: str) -> Follower:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mirapi_cli.main",
            "events",
            "tail",
            "-f",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env_for(data_dir),
        )
        return cls(process)

    async def line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), WAIT)
        assert raw, "the follower ended"
        data: dict[str, Any] = json.loads(raw)
        return data

    async def interrupt(self) -> tuple[int, str]:
        """Ctrl-C; the exit code and stderr."""
        self.process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(self.process.communicate(), WAIT)
        assert self.process.returncode is not None
        return self.process.returncode, err.decode()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def test_follow_prints_new_events_as_they_come_and_ctrl_c_exits_0(
    store: Store, data_dir: Path
) -> None:
    await add(store, event(0), event(1))
    follower = await Follower.start(data_dir, "-n", "1", "--kind", "rescue")
    try:
        assert (await follower.line())["request_id"] == "req-1"
        # Written after the follower read the log: it must show up.
        await add(store, event(2, JOB, reason="failed"), event(3))
        assert (await follower.line())["request_id"] == "req-3"  # the job was filtered out
        await add(store, event(4))
        assert (await follower.line())["request_id"] == "req-4"
        code, err = await follower.interrupt()
    finally:
        follower.kill()
    assert code == 0
    assert err == ""


async def test_follow_an_empty_log_shows_the_first_event(store: Store, data_dir: Path) -> None:
    follower = await Follower.start(data_dir, "--json")
    try:
        await asyncio.sleep(0.5)  # most likely reading an empty log by now
        await add(store, event(7))
        assert (await follower.line())["request_id"] == "req-7"
    finally:
        follower.kill()
        await follower.process.wait()


# -- on a terminal -------------------------------------------------------------------


def run_on_terminal(
    data_dir: Path, *args: str, until: bytes, then_interrupt: bool = False
) -> tuple[int, str]:
    """Run `mirapi ARGS` on a pseudo-terminal; its exit code and output (nothing on stderr)."""
    code, seen, err = on_terminal(
        args, env_for(data_dir), columns=120, until=until, then_interrupt=then_interrupt
    )
    assert err == "", err
    return code, seen


async def test_a_terminal_gets_a_table(store: Store, data_dir: Path) -> None:
    await add(store, event(0, route="pay"), event(1, BREAKER, reason="open", detail="closed->open"))
    code, shown = await asyncio.to_thread(
        run_on_terminal, data_dir, "events", "tail", until=b"closed->open"
    )
    assert code == 0
    assert "Request ID" in shown and "req-0" in shown and "pay" in shown
    assert "2023-11-14 22:13:20.000" in shown
    assert "{" not in shown  # not JSON


async def test_a_terminal_with_no_events_is_told_so(data_dir: Path) -> None:
    code, shown = await asyncio.to_thread(
        run_on_terminal, data_dir, "events", "tail", "--kind", "job", until=b"events"
    )
    assert code == 0 and "no matching events" in shown


async def test_a_terminal_follows_in_a_live_table(store: Store, data_dir: Path) -> None:
    await add(store, event(0))
    follower = asyncio.create_task(
        asyncio.to_thread(
            run_on_terminal, data_dir, "events", "tail", "-f", until=b"req-9", then_interrupt=True
        )
    )
    await asyncio.sleep(1.0)
    await add(store, event(9))
    code, shown = await follower
    assert code == 0
    assert "following; Ctrl-C to stop" in shown
    assert "req-0" in shown and "req-9" in shown
