"""sidecar/process/server.py: binding, the state file, signals and graceful shutdown.

`server.run` owns the process (signal handlers, the event loop), so each test
runs it in a child process, serving a small ASGI app whose `?delay=` makes a
request slow; the app touches a marker file when a request has arrived, so a
test knows it is in flight before it signals.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.config import load
from sidecar.process import server

REPO = Path(__file__).resolve().parents[2]
WAIT = 15.0  # every wait in these tests is bounded by this

SERVE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from pathlib import Path
    from sidecar.process import server
    from sidecar.config import load
    from sidecar.observability.logging import setup_logging

    marker = Path(os.environ["MARKER"])

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        query = dict(p.split("=") for p in scope["query_string"].decode().split("&") if p)
        delay = float(query.get("delay", 0))
        if delay:
            marker.touch()
        await asyncio.sleep(delay)
        body = json.dumps({"pid": os.getpid(), "slept": delay}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    settings = load(None, os.environ, json.loads(sys.argv[1]))
    setup_logging("info", sys.stderr)
    sys.exit(server.run(settings, app))
    """
)


class Served:
    """A child process running `server.run`."""

    def __init__(self, tmp_path: Path, flags: dict[str, Any]) -> None:
        self.data_dir = tmp_path / "data"
        self.marker = tmp_path / "in-flight"
        self.log = tmp_path / f"server-{time.monotonic_ns()}.log"
        script = tmp_path / "serve.py"
        script.write_text(SERVE_SCRIPT)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "MIRAPI_DATA_DIR": str(self.data_dir),
            "MARKER": str(self.marker),
        }
        flags = {"listen": "127.0.0.1:0", **flags}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(script), json.dumps(flags)], env=env, stderr=log
            )

    def state(self) -> dict[str, Any]:
        """Wait for the state file naming this process; return it."""
        path = self.data_dir / "sidecar.json"
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            if path.exists():
                data: dict[str, Any] = json.loads(path.read_text())
                if data["pid"] == self.process.pid:
                    return data
            time.sleep(0.02)
        raise AssertionError(f"no state file after {WAIT} s: {self.log.read_text()}")

    def wait_in_flight(self) -> None:
        deadline = time.monotonic() + WAIT
        while not self.marker.exists():
            assert time.monotonic() < deadline, "the slow request never arrived"
            time.sleep(0.02)

    def exit_code(self) -> int:
        return self.process.wait(WAIT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(**flags: Any) -> Served:
        served = Served(tmp_path, flags)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def get_in_thread(url: str, result: dict[str, Any]) -> threading.Thread:
    """GET `url` in a thread; the response (or the error) lands in `result`."""

    def fetch() -> None:
        try:
            result["response"] = httpx.get(url, timeout=WAIT)
        except httpx.HTTPError as error:
            result["error"] = error

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    return thread


def test_port_0_is_recorded_as_the_bound_port(serve: Any) -> None:
    served = serve()
    state = served.state()
    assert set(state) == {"pid", "address", "version", "started_at", "token", "start_time"}
    host, port = state["address"].removeprefix("http://").rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    response = httpx.get(state["address"] + "/anything", timeout=WAIT)
    assert response.json()["pid"] == served.process.pid


def test_sigterm_exits_0_and_removes_the_state_file(serve: Any) -> None:
    served = serve()
    served.state()
    served.process.send_signal(signal.SIGTERM)
    assert served.exit_code() == 0
    assert not (served.data_dir / "sidecar.json").exists()
    assert '"SIGTERM received: shutting down"' in served.log.read_text()


def test_sigint_is_graceful_too(serve: Any) -> None:
    served = serve()
    served.state()
    served.process.send_signal(signal.SIGINT)
    assert served.exit_code() == 0
    assert not (served.data_dir / "sidecar.json").exists()


def test_in_flight_request_finishes_and_new_ones_are_refused(serve: Any) -> None:
    served = serve(shutdown_grace="10s")
    address = served.state()["address"]
    result: dict[str, Any] = {}
    thread = get_in_thread(address + "/slow?delay=1.5", result)
    served.wait_in_flight()
    served.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):
        httpx.get(address + "/late", timeout=2)
    thread.join(WAIT)
    assert result["response"].status_code == 200
    assert result["response"].json()["slept"] == 1.5
    assert served.exit_code() == 0


def test_shutdown_grace_bounds_the_wait_for_slow_requests(serve: Any) -> None:
    served = serve(shutdown_grace="500ms")
    address = served.state()["address"]
    result: dict[str, Any] = {}
    thread = get_in_thread(address + "/slow?delay=30", result)
    served.wait_in_flight()
    signalled = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    assert served.exit_code() == 0
    assert time.monotonic() - signalled < 5
    thread.join(WAIT)
    # Cut off: Hypercorn answers 500 when the app is cancelled before it
    # started its response, or drops the connection.
    assert "error" in result or result["response"].status_code == 500


def test_a_second_signal_stops_at_once(serve: Any) -> None:
    served = serve(shutdown_grace="30s")
    address = served.state()["address"]
    get_in_thread(address + "/slow?delay=30", {})
    served.wait_in_flight()
    served.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    signalled = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    assert served.exit_code() == 1
    assert time.monotonic() - signalled < 5
    assert not (served.data_dir / "sidecar.json").exists()


def test_a_request_slower_than_read_timeout_still_completes(serve: Any) -> None:
    # read_timeout is for clients that stop sending, not for slow answers.
    served = serve(read_timeout="1s")
    address = served.state()["address"]
    response = httpx.get(address + "/slow?delay=2.5", timeout=WAIT)
    assert response.status_code == 200


def test_unix_socket(serve: Any, tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    served = serve(unix=str(path))
    state = served.state()
    assert state["address"] == f"unix:{path}"
    assert path.stat().st_mode & 0o077 == 0  # only the owner may connect
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport, timeout=WAIT) as client:
        assert client.get("http://localhost/x").json()["pid"] == served.process.pid
    served.process.send_signal(signal.SIGTERM)
    assert served.exit_code() == 0
    assert not path.exists()


def test_one_sidecar_per_data_dir(serve: Any) -> None:
    first = serve()
    first.state()
    second = serve()
    assert second.exit_code() == 1
    assert "another sidecar is running" in second.log.read_text()
    assert json.loads((first.data_dir / "sidecar.json").read_text())["pid"] == first.process.pid


def test_address_in_use_fails_with_a_message(serve: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        served = serve(listen=f"127.0.0.1:{port}")
        assert served.exit_code() == 1
    log = served.log.read_text()
    assert f"cannot listen on 127.0.0.1:{port}" in log
    assert "Traceback" not in log
    assert not (served.data_dir / "sidecar.json").exists()


def test_wildcard_bind_is_announced_as_loopback(tmp_path: Path) -> None:
    settings = load(None, {"MIRAPI_DATA_DIR": str(tmp_path)}, {"listen": "0.0.0.0:0"})
    config = server.hypercorn_config(settings)
    address = server.bind(config, settings)
    try:
        assert address.startswith("http://127.0.0.1:")
        assert not address.endswith(":0")
        assert config.bind[0].startswith("fd://")
    finally:
        os.close(int(config.bind[0].removeprefix("fd://")))


def test_hypercorn_settings_follow_the_config(tmp_path: Path) -> None:
    flags = {"shutdown_grace": "3s", "read_timeout": "1500ms"}
    settings = load(None, {"MIRAPI_DATA_DIR": str(tmp_path)}, flags)
    config = server.hypercorn_config(settings)
    assert config.graceful_timeout == 3.0
    assert config.read_timeout == 2  # whole seconds, rounded up
    assert config.accesslog is None
    assert config.include_server_header is False
