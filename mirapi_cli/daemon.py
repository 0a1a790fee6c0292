"""Start, stop and inspect the detached sidecar process, like supervisor does.

    start   spawn `mirapi sidecar start --foreground ...` in its own session,
            output appended to sidecar.log; ready once the state file names
            the child's pid AND its /_mirapi/healthz answers with that pid
    status  read the state file, then ask the live sidecar's healthz
    stop    SIGTERM, wait shutdown_grace + a margin, then SIGKILL; stopping
            a stopped sidecar is not an error

The state file (`sidecar.json` in the data dir) is written by the sidecar
after it binds and removed when it exits. One left behind by a crash is
*stale*: its pid is gone, or now belongs to some other program. Stale files
are removed and reported. A pid that is alive and still a sidecar but does
not answer is reported as unresponsive, never silently replaced, since
starting a second one beside it would fight over the data dir.

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
from sidecar.state import SidecarState, read_state, remove_state

__all__ = [
    "DaemonError",
    "SidecarState",
    "Started",
    "Status",
    "Stopped",
    "fetch_health",
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

    state: SidecarState | None = None  # a live sidecar (answering or not)
    health: dict[str, Any] | None = None  # its healthz answer; None: not answering
    removed_stale: str | None = None  # why a stale state file was removed

    @property
    def running(self) -> bool:
        """A sidecar is alive and answering."""
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
    if not pid_alive(state.pid):
        remove_state(data_dir, state.pid)
        return Status(removed_stale=f"pid {state.pid} is not running")
    health = fetch_health(state.address, timeout=timeout)
    if health is not None and health.get("pid") == state.pid:
        return Status(state=state, health=health)
    if not _is_sidecar(state.pid):
        remove_state(data_dir, state.pid)
        return Status(removed_stale=f"pid {state.pid} is no longer a mirapi sidecar")
    return Status(state=state)


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


def _is_sidecar(pid: int) -> bool:
    """Whether `pid` runs mirapi; True when the system cannot tell us."""
    command: bytes | None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        command = _ps_command(pid) if not Path("/proc/self").exists() else b""
    except OSError:
        command = _ps_command(pid)
    return command is None or b"mirapi" in command


def _ps_command(pid: int) -> bytes | None:
    """The command line of `pid` from ps(1), where there is no /proc (macOS)."""
    try:
        done = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


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
    command = [sys.executable, "-m", "mirapi_cli.main", "sidecar", "start", "--foreground"]
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
                health = fetch_health(state.address, timeout=1.0)
                if health is not None and health.get("pid") == child.pid:
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
    """SIGTERM the sidecar, wait `grace` + a margin, then SIGKILL. Idempotent."""
    status = inspect(data_dir)
    if status.state is None:
        return Stopped(pid=None, removed_stale=status.removed_stale)
    pid = status.state.pid
    killed = False
    if not _signal_and_wait(pid, signal.SIGTERM, grace + STOP_MARGIN):
        killed = True
        if not _signal_and_wait(pid, signal.SIGKILL, KILL_WAIT):
            raise DaemonError(f"pid {pid} is still running after SIGKILL")
    # A sidecar that exits cleanly removes the file itself; after SIGKILL we do.
    remove_state(data_dir, pid)
    return Stopped(pid=pid, killed=killed)


def _signal_and_wait(pid: int, signum: signal.Signals, timeout: float) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return True
    return wait_exit(pid, timeout)
