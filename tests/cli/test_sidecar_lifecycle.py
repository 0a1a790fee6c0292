"""`mirapi sidecar start | stop | status | logs`, end to end with real processes.

Every command runs the real entry point (`python -m mirapi_cli.main`) with
MIRAPI_DATA_DIR in the test's tmp dir; sidecars listen on 127.0.0.1 port 0.
Every wait is bounded, and a fixture kills whatever a test left running.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mirapi_cli.daemon import wait_exit
from tests.support.cli import WAIT, Cli, kill_leftover


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    config = tmp_path / "config.toml"
    config.write_text("")
    runner = Cli(tmp_path / "data", config)
    yield runner
    kill_leftover(runner.state_file)


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(WAIT)
    return child.pid


class SlowUpstream:
    """A local HTTP server that answers every GET with `body` after `delay` seconds."""

    def __init__(self, delay: float, body: dict[str, Any] | None = None) -> None:
        delay_seconds = delay
        payload = json.dumps(body if body is not None else {"slow": "done"}).encode()
        self.arrived = threading.Event()
        arrived = self.arrived

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                arrived.set()
                time.sleep(delay_seconds)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_start_status_stop_round_trip(cli: Cli) -> None:
    state = cli.start()
    assert state["address"].startswith("http://127.0.0.1:")

    status = cli("sidecar", "status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["running"] is True
    assert data["pid"] == state["pid"] and data["address"] == state["address"]

    health = httpx.get(state["address"] + "/_mirapi/healthz", timeout=WAIT)
    assert health.status_code == 200 and health.json()["pid"] == state["pid"]
    # Who the sidecar is: its token, and the start time the system gives its pid.
    assert health.json()["token"] == state["token"] and len(state["token"]) == 32
    assert state["start_time"] == start_time_of(state["pid"])

    human = cli("sidecar", "status")
    assert human.returncode == 0 and str(state["pid"]) in human.stdout

    stop = cli("sidecar", "stop")
    assert stop.returncode == 0, stop.stderr
    assert f"stopped: pid {state['pid']}" in stop.stdout
    assert not cli.state_file.exists()

    status = cli("sidecar", "status", "--json")
    assert status.returncode == 3
    assert json.loads(status.stdout)["running"] is False

    again = cli("sidecar", "stop")
    assert again.returncode == 0
    assert "not running" in again.stdout


def test_a_second_start_is_refused(cli: Cli) -> None:
    state = cli.start()
    second = cli("sidecar", "start", "--listen", "127.0.0.1:0")
    assert second.returncode == 1
    assert f"pid {state['pid']}" in second.stderr and state["address"] in second.stderr
    assert cli.state()["pid"] == state["pid"]


def test_stale_state_file_is_detected_and_removed(cli: Cli) -> None:
    cli.data_dir.mkdir(parents=True)
    pid = dead_pid()
    stale = {"pid": pid, "address": "http://127.0.0.1:9", "version": "0", "started_at": "x"}
    cli.state_file.write_text(json.dumps(stale))

    status = cli("sidecar", "status")
    assert status.returncode == 3
    assert "stale" in status.stderr and str(pid) in status.stderr
    assert not cli.state_file.exists()


def test_a_reused_pid_is_stale_too(cli: Cli) -> None:
    # The pid is alive but runs something else (here: pytest itself), and the
    # file (as an older mirapi wrote it) cannot say which process it meant.
    cli.data_dir.mkdir(parents=True)
    stale = {"pid": os.getpid(), "address": "http://127.0.0.1:9", "version": "0", "started_at": "x"}
    cli.state_file.write_text(json.dumps(stale))
    status = cli("sidecar", "status")
    assert status.returncode == 3
    assert "stale" in status.stderr and "left alone" in status.stderr
    assert not cli.state_file.exists()


@pytest.fixture
def impostor() -> Iterator[subprocess.Popen[str]]:
    """An unrelated process with "mirapi" in its command line, as a reused pid
    might be; it ignores nothing, so any signal would end it."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; print('ready', flush=True); time.sleep(60)",
            "mirapi",
            "sidecar",
            "start",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    yield process
    process.kill()
    process.wait(WAIT)


def write_state(cli: Cli, pid: int, address: str = "http://127.0.0.1:9", **fields: str) -> None:
    cli.data_dir.mkdir(parents=True, exist_ok=True)
    state = {"pid": pid, "address": address, "version": "0", "started_at": "x", **fields}
    cli.state_file.write_text(json.dumps(state))


def start_time_of(pid: int) -> str:
    from sidecar.process.state import process_start_time

    start = process_start_time(pid)
    assert start is not None
    return start


def test_stop_and_status_leave_a_reused_pid_alive(
    cli: Cli, impostor: subprocess.Popen[str]
) -> None:
    # The sidecar that wrote this file started at another time than the
    # process that has its pid now.
    write_state(cli, impostor.pid, token="a" * 32, start_time="bbfc69e2:1")
    stop = cli("sidecar", "stop", MIRAPI_SHUTDOWN_GRACE="0s")
    assert stop.returncode == 0, stop.stderr
    assert "stale" in stop.stderr and f"pid {impostor.pid} is now another process" in stop.stderr
    assert "sidecar is not running" in stop.stdout
    assert not cli.state_file.exists()

    write_state(cli, impostor.pid, token="a" * 32, start_time="bbfc69e2:1")
    status = cli("sidecar", "status")
    assert status.returncode == 3
    assert "stale" in status.stderr and str(impostor.pid) in status.stderr
    time.sleep(0.2)  # a signal, had one been sent, has landed by now
    assert impostor.poll() is None


def test_a_pid_that_answers_with_another_token_is_not_signalled(
    cli: Cli, impostor: subprocess.Popen[str]
) -> None:
    # Same pid, same start time (copied from the live process), and something
    # answers healthz claiming that pid: without the token it is still stale.
    healthz = SlowUpstream(0, {"status": "ok", "pid": impostor.pid, "token": "b" * 32})
    try:
        write_state(
            cli, impostor.pid, healthz.url, token="a" * 32, start_time=start_time_of(impostor.pid)
        )
        stop = cli("sidecar", "stop", MIRAPI_SHUTDOWN_GRACE="0s")
    finally:
        healthz.close()
    assert stop.returncode == 0, stop.stderr
    assert "stale" in stop.stderr and "does not answer with the token" in stop.stderr
    assert not cli.state_file.exists()
    time.sleep(0.2)
    assert impostor.poll() is None


def test_an_unresponsive_pid_is_reported_and_never_signalled(
    cli: Cli, impostor: subprocess.Popen[str]
) -> None:
    # The start time matches but nothing answers: the token cannot be
    # checked, so the pid is neither trusted nor forgotten.
    write_state(cli, impostor.pid, token="a" * 32, start_time=start_time_of(impostor.pid))
    status = cli("sidecar", "status", "--json")
    assert status.returncode == 1
    shown = json.loads(status.stdout)
    assert shown["responding"] is False and "token" not in shown

    start = cli("sidecar", "start", "--listen", "127.0.0.1:0")
    assert start.returncode == 1
    assert f"pid {impostor.pid}" in start.stderr and "does not answer" in start.stderr

    stop = cli("sidecar", "stop", MIRAPI_SHUTDOWN_GRACE="0s")
    assert stop.returncode == 1
    assert "not signalled" in stop.stderr and f"kill {impostor.pid}" in stop.stderr
    assert cli.state_file.exists()
    time.sleep(0.2)
    assert impostor.poll() is None


def test_kill_leftover_checks_identity_too(impostor: subprocess.Popen[str], tmp_path: Path) -> None:
    # What made a test kill its own pytest worker: a leftover state file
    # naming a pid that some other process has now.
    state_file = tmp_path / "sidecar.json"
    for start_time in ("bbfc69e2:1", start_time_of(impostor.pid)):
        state = {
            "pid": impostor.pid,
            "address": "http://127.0.0.1:9",
            "version": "0",
            "started_at": "x",
            "token": "a" * 32,
            "start_time": start_time,
        }
        state_file.write_text(json.dumps(state))
        kill_leftover(state_file)
    time.sleep(0.2)
    assert impostor.poll() is None


def test_kill_leftover_kills_a_real_leftover_sidecar(cli: Cli) -> None:
    state = cli.start()
    kill_leftover(cli.state_file)
    assert wait_exit(state["pid"], WAIT), "the leftover sidecar is still running"


def test_start_replaces_a_stale_state_file(cli: Cli) -> None:
    cli.data_dir.mkdir(parents=True)
    stale = {"pid": dead_pid(), "address": "http://127.0.0.1:9", "version": "0", "started_at": "x"}
    cli.state_file.write_text(json.dumps(stale))
    state = cli.start()
    assert state["pid"] != stale["pid"]
    assert cli("sidecar", "status").returncode == 0


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--listen", "127.0.0.1:http"], {}, "--listen"),
        ([], {"MIRAPI_MAX_BODY": "10 parsecs"}, "MIRAPI_MAX_BODY"),
    ],
)
def test_bad_config_value_names_the_key(
    cli: Cli, args: list[str], env: dict[str, str], named: str
) -> None:
    done = cli("sidecar", "start", *args, **env)
    assert done.returncode == 1
    assert named in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not cli.state_file.exists()


def test_unknown_key_in_the_config_file(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("retires = 3\n")
    done = cli("sidecar", "start")
    assert done.returncode == 1
    assert "retires" in done.stderr and "Traceback" not in done.stderr


def test_start_failure_shows_the_log_tail(cli: Cli) -> None:
    state = cli.start()
    port = state["address"].rsplit(":", 1)[1]
    other = Cli(cli.data_dir.parent / "other", Path(cli.env["MIRAPI_CONFIG"]))
    done = other("sidecar", "start", "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert "exited during start-up" in done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert not other.state_file.exists()


def test_foreground_sigterm_exits_0_and_removes_the_state_file(cli: Cli) -> None:
    process = cli.popen("sidecar", "start", "--foreground", "--listen", "127.0.0.1:0")
    try:
        deadline = time.monotonic() + WAIT
        while not cli.state_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no state file"
            time.sleep(0.05)
        assert cli.state()["pid"] == process.pid
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert not cli.state_file.exists()
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert any("listening on" in line.get("message", "") for line in lines)


def test_in_flight_request_finishes_during_stop(cli: Cli) -> None:
    upstream = SlowUpstream(delay=1.5)
    try:
        state = cli.start("--allow-private")
        result: dict[str, Any] = {}

        def call() -> None:
            headers = {"X-Target-URL": upstream.url + "/slow"}
            result["response"] = httpx.get(state["address"] + "/", headers=headers, timeout=WAIT)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        assert upstream.arrived.wait(WAIT)
        stop = cli("sidecar", "stop")
        caller.join(WAIT)
    finally:
        upstream.close()
    assert stop.returncode == 0, stop.stderr
    assert "stopped" in stop.stdout
    assert result["response"].status_code == 200
    assert result["response"].json() == {"slow": "done"}


def test_logs_shows_the_last_lines(cli: Cli) -> None:
    state = cli.start()
    httpx.get(state["address"] + "/_mirapi/healthz", timeout=WAIT)
    cli("sidecar", "stop")

    logs = cli("sidecar", "logs", "-n", "2")
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    assert len(lines) == 2
    assert all(json.loads(line)["time"] for line in lines)
    assert json.loads(lines[-1])["message"] == "stopped"

    everything = cli("sidecar", "logs")
    assert any(f"pid {state['pid']}" in line for line in everything.stdout.splitlines())


def test_logs_follow_prints_new_lines(cli: Cli) -> None:
    state = cli.start()
    before = (cli.data_dir / "sidecar.log").read_text().splitlines()
    follower = cli.popen("sidecar", "logs", "-f", "-n", "1")
    try:
        assert follower.stdout is not None
        # Its first line is the log's last: it follows from the end now (no guessed sleep).
        assert follower.stdout.readline().rstrip("\n") == before[-1]
        assert cli("sidecar", "stop").returncode == 0
        deadline = time.monotonic() + WAIT
        seen = ""
        while '"stopped"' not in seen:
            assert time.monotonic() < deadline, seen
            seen += follower.stdout.readline()
        assert not set(seen.splitlines()) & set(before)  # -n 1: only what came after
        assert f"pid {state['pid']}" not in seen
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(WAIT)
    assert follower.returncode == 130


def test_logs_without_a_log_file(cli: Cli) -> None:
    done = cli("sidecar", "logs")
    assert done.returncode == 1
    assert "no log yet" in done.stderr


def test_unix_socket_sidecar(cli: Cli, tmp_path: Path) -> None:
    socket_path = tmp_path / "mirapi.sock"
    done = cli("sidecar", "start", "--unix", str(socket_path))
    assert done.returncode == 0, done.stderr
    assert cli.state()["address"] == f"unix:{socket_path}"
    status = cli("sidecar", "status", "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["health"]["status"] == "ok"
    assert cli("sidecar", "stop").returncode == 0
    assert not socket_path.exists()


def test_version_and_usage_errors(cli: Cli) -> None:
    version = cli("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("mirapi ")
    usage = cli("sidecar", "status", "--no-such-flag")
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr
