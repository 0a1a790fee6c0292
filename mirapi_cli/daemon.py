"""Start, stop and inspect the detached sidecar process, like supervisor does.

    start   spawn `mirapi sidecar start --foreground ...` in its own session,
            output appended to sidecar.log; ready once the state file names
            the child's pid AND its /_mirapi/healthz answers with that pid
    status  read the state file, then ask the live sidecar's healthz
    stop    SIGTERM, wait shutdown_grace + a margin, then SIGKILL; stopping
            a stopped sidecar is not an error

The state file (`sidecar.json` in the data dir) is written by the sidecar
after it binds and removed when it exits. One left behind by a crash is
*stale*: its pid is gone, or now belongs to some other program. A pid is
trusted only when the process has the start time the sidecar recorded of
itself AND its healthz answers with the sidecar's token (sidecar/process/state.py);
a command line containing "mirapi" proves nothing. Stale files are removed
and reported, and their pid is never signalled. A pid with the recorded
start time that does not answer is reported as unresponsive: the file is
kept (starting a second sidecar beside it would fight over the data dir),
but it is not signalled either, since it cannot show its token.

No Typer here: commands call these functions and render what they return.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirapi_cli.logtail import last_lines
from sidecar import paths
from sidecar.process.state import SidecarState, process_start_time, read_state, remove_state

__all__ = [
    "DaemonError",
    "SidecarState",
    "Started",
    "Status",
    "Stopped",
    "fetch_health",
    "identify",
    "inspect",
    "pid_alive",
    "read_state",
    "start",
    "stop",
    "wait_exit",
]

READY_TIMEOUT = 15.0
# Beyond shutdown_grace: the app's lifespan shutdown and interpreter exit.
STOP_MARGIN = 5.0
KILL_WAIT = 5.0
HEALTH_PATH = "/_mirapi/healthz"
_POLL = 0.05
_LOG_TAIL_LINES = 20


class DaemonError(Exception):
    """The sidecar could not be started or stopped; `log_tail` says why, if known."""

    def __init__(self, message: str, log_tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.log_tail = list(log_tail)


@dataclass(frozen=True, slots=True)
class Status:
    """What `inspect` found in a data dir."""

    state: SidecarState | None = None  # the sidecar's pid, by its start time
    health: dict[str, Any] | None = None  # its healthz answer, with its token
    removed_stale: str | None = None  # why a stale state file was removed

    @property
    def running(self) -> bool:
        """The sidecar is alive and answered with its token: the one pid to signal."""
        return self.state is not None and self.health is not None


@dataclass(frozen=True, slots=True)
class Started:
    """The outcome of `start`."""

    state: SidecarState
    log_file: Path
    removed_stale: str | None


@dataclass(frozen=True, slots=True)
class Stopped:
    """The outcome of `stop`; `pid` None means nothing was running."""

    pid: int | None
    killed: bool = False  # SIGKILL was needed after the grace period
    removed_stale: str | None = None


# --- what runs ---


def inspect(data_dir: Path, *, timeout: float = 2.0) -> Status:
    """The sidecar of `data_dir`: running, unresponsive, or none (stale file removed)."""
    try:
        state = read_state(data_dir)
    except ValueError as error:
        remove_state(data_dir, None)
        return Status(removed_stale=f"the state file was unreadable ({error})")
    if state is None:
        return Status()
    found = identify(state, timeout=timeout)
    if found.removed_stale is not None:
        remove_state(data_dir, state.pid)
    return found


def identify(state: SidecarState, *, timeout: float = 2.0) -> Status:
    """Whether `state` still describes a live sidecar; removes nothing.

    `running`: same start time and the token answered, the pid may be
    signalled. `state` without `health`: same start time, no answer (the
    token cannot be checked). `removed_stale`: why the pid is not the sidecar.
    """
    pid = state.pid
    if not pid_alive(pid):
        return Status(removed_stale=f"pid {pid} is not running")
    left_alone = "it was left alone"
    if state.token is None or state.start_time is None:
        return Status(
            removed_stale=f"the file does not say which process pid {pid} was (no token or"
            f" start time: written by an older mirapi); {left_alone}"
        )
    if process_start_time(pid) != state.start_time:
        return Status(
            removed_stale=f"pid {pid} is now another process (it started at another time"
            f" than the sidecar); {left_alone}"
        )
    health = fetch_health(state.address, timeout=timeout)
    if health is None:
        return Status(state=state)
    if health.get("token") == state.token and health.get("pid") == pid:
        return Status(state=state, health=health)
    return Status(
        removed_stale=f"{state.address} does not answer with the token of pid {pid}; {left_alone}"
    )


# --- processes ---


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not ours to judge
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    # A killed daemon whose parent has not reaped it yet (a container without
    # an init) still answers kill(pid, 0); /proc says it is dead ("Z").
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to exit; whether it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


# --- health ---


def fetch_health(address: str, *, timeout: float = 2.0) -> dict[str, Any] | None:
    """GET /_mirapi/healthz at `address` (http://… or unix:/…); None if no good answer."""
    import httpx

    transport: httpx.HTTPTransport | None = None
    base = address
    if address.startswith("unix:"):
        transport = httpx.HTTPTransport(uds=address.removeprefix("unix:"))
        base = "http://localhost"  # a loopback Host, which the sidecar accepts
    # trust_env=False: an HTTP(S)_PROXY in the environment must not route a
    # local health check through some other machine.
    try:
        with httpx.Client(transport=transport, timeout=timeout, trust_env=False) as client:
            response = client.get(base + HEALTH_PATH)
            data = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- start and stop ---


def start(
    args: Sequence[str],
    data_dir: Path,
    *,
    env: Mapping[str, str],
    timeout: float = READY_TIMEOUT,
    stdin: bytes | None = None,
) -> Started:
    """Spawn a detached sidecar with `args` (flags of `sidecar start`) and wait until ready.

    `stdin` is written to the child's stdin, then closed: how a passphrase
    (`--unlock`) reaches it without argv or the environment, which other
    users or a crash dump could read.
    """
    status = inspect(data_dir)
    if status.state is not None:
        how = "runs" if status.running else "runs but does not answer"
        raise DaemonError(
            f"a sidecar already {how} for {data_dir} (pid {status.state.pid}, "
            f"{status.state.address}); stop it first with `mirapi sidecar stop`"
        )
    log_path = paths.log_file(paths.ensure_dir(data_dir))
    offset = log_path.stat().st_size if log_path.exists() else 0
    child = _spawn(args, data_dir, log_path, env, stdin)
    try:
        state = _wait_ready(child, data_dir, log_path, offset, timeout)
    except BaseException:
        _terminate(child)  # never leave a half-started daemon behind
        raise
    return Started(state=state, log_file=log_path, removed_stale=status.removed_stale)


def _spawn(
    args: Sequence[str],
    data_dir: Path,
    log_path: Path,
    env: Mapping[str, str],
    stdin: bytes | None = None,
) -> subprocess.Popen[bytes]:
    # The lean entry: the same flags as `sidecar start --foreground`, without
    # the CLI's Typer/pydantic in a long-running process (sidecar/__main__.py).
    command = [sys.executable, "-m", "sidecar"]
    command += [*args, "--data-dir", str(data_dir)]
    with log_path.open("ab") as log:
        # A new session: no controlling terminal, so the shell's Ctrl-C and
        # hang-up never reach the daemon; only `stop` ends it.
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )
    if stdin is not None and child.stdin is not None:
        # Far below a pipe's buffer: written at once, whenever the child reads.
        with contextlib.suppress(BrokenPipeError):
            child.stdin.write(stdin)
        child.stdin.close()
    return child


def _wait_ready(
    child: subprocess.Popen[bytes], data_dir: Path, log_path: Path, offset: int, timeout: float
) -> SidecarState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            tail = last_lines(log_path, _LOG_TAIL_LINES, since=offset)
            raise DaemonError(f"the sidecar exited during start-up (code {code})", tail)
        with contextlib.suppress(ValueError):
            state = read_state(data_dir)
            if state is not None and state.pid == child.pid:
                if identify(state, timeout=1.0).running:
                    return state
        time.sleep(_POLL)
    tail = last_lines(log_path, _LOG_TAIL_LINES, since=offset)
    raise DaemonError(f"the sidecar did not become ready within {timeout:g} s", tail)


def _terminate(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(KILL_WAIT)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(KILL_WAIT)


def stop(data_dir: Path, *, grace: float) -> Stopped:
    """SIGTERM the sidecar, wait `grace` + a margin, then SIGKILL. Idempotent.

    Only a pid `inspect` found running (start time and token) is signalled.
    """
    status = inspect(data_dir)
    if status.state is None:
        return Stopped(pid=None, removed_stale=status.removed_stale)
    state = status.state
    if not status.running:
        raise DaemonError(
            f"pid {state.pid} has the sidecar's start time but does not answer at"
            f" {state.address}, so it cannot show the sidecar's token: not signalled."
            f" If it is the sidecar, end it yourself (kill {state.pid})"
        )
    killed = False
    if not _signal_and_wait(state, signal.SIGTERM, grace + STOP_MARGIN):
        killed = True
        if not _signal_and_wait(state, signal.SIGKILL, KILL_WAIT):
            raise DaemonError(f"pid {state.pid} is still running after SIGKILL")
    # A sidecar that exits cleanly removes the file itself; after SIGKILL we do.
    remove_state(data_dir, state.pid)
    return Stopped(pid=state.pid, killed=killed)


def _signal_and_wait(state: SidecarState, signum: signal.Signals, timeout: float) -> bool:
    # The start time again, just before the signal: the sidecar may have
    # exited since, and its pid gone to another process.
    if process_start_time(state.pid) != state.start_time:
        return True
    try:
        os.kill(state.pid, signum)
    except ProcessLookupError:
        return True
    return wait_exit(state.pid, timeout)
