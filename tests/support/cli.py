"""The `mirapi` entry point against one data dir, in this process or as a process.

Most commands are tested in this process (`invoke`, `run_mirapi`): through
the real entry point (`main.run`, its error guard and exit codes) with
stdin, stdout, stderr and the environment swapped for the call, as Click's
CliRunner does. That costs milliseconds where a `python -m mirapi_cli.main`
costs half a second of CPU (importing Typer, rich and pydantic again).

A real process (`Cli`, `run_mirapi_process`, `on_terminal`) stays where the
process is the point: the sidecar daemon's lifecycle, signals, a terminal,
the exit status the shell sees. Sidecars listen on 127.0.0.1 port 0. Every
wait is bounded, and `kill_leftover` kills whatever a test left running.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
WAIT = 30.0

#: One in-process command at a time: the swap of sys.stdin/stdout/stderr
#: and os.environ is process-wide, and tests gather several calls at once.
_IN_PROCESS = threading.Lock()


def invoke(
    args: Sequence[str], env: Mapping[str, str], *, stdin: bytes = b""
) -> tuple[int, bytes, str]:
    """Run `mirapi ARGS` in this process through the real entry point (`main.run`).

    os.environ is made `env` (the whole environment, as a process would get
    it) for the call; stdin is `stdin`, never a terminal. Returns (exit code,
    stdout bytes, stderr text), as a process would. Call it from a thread of its own when
    an event loop runs (`run_mirapi` does): commands run their own loop.
    """
    from typer.testing import CliRunner

    from mirapi_cli import output
    from mirapi_cli.main import run

    # Bounded: a call that hung holds the lock, and the next must say so, not hang too.
    if not _IN_PROCESS.acquire(timeout=WAIT * 2):
        raise RuntimeError(f"mirapi {' '.join(args)}: an earlier in-process call never ended")
    try:
        # The consoles are made once per process; a new call is a new process.
        output.stdout.cache_clear()
        output.stderr.cache_clear()
        # Worked out under the lock: another call may have changed os.environ until now.
        changes = environment_changes(env)
        code: object = 0
        with CliRunner().isolation(input=stdin, env=changes) as (out, err, _):
            try:
                run(list(args))
            except SystemExit as exit_:
                code = exit_.code
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            return _exit_status(code), out.getvalue(), err.getvalue().decode(errors="replace")
    finally:
        _IN_PROCESS.release()


def _exit_status(code: object) -> int:
    """What a shell would see for `sys.exit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


#: What `Cli` runs in this process: commands that end by themselves and leave
#: no process behind. The rest (`sidecar start/run/logs`, `events tail -f`,
#: `completion`, `dashboard`) stay real processes:
#: a daemon must not be this process's child, a follower never returns, and
#: completions and terminals are about the process.
IN_PROCESS = frozenset(
    {
        ("routes",),
        ("secrets",),
        ("keys",),
        ("jobs",),
        ("webhooks",),
        ("stats",),
        ("replay",),
        ("curl",),
        ("events", "tail"),
        ("sidecar", "stop"),
        ("sidecar", "status"),
        ("sidecar", "list"),
        ("sidecar", "install-service"),
        ("--version",),
    }
)
FOLLOW_FLAGS = frozenset({"-f", "--follow"})


def runs_in_process(args: Sequence[str]) -> bool:
    """Whether `Cli` runs `mirapi ARGS` in this process (see IN_PROCESS)."""
    if FOLLOW_FLAGS.intersection(args):
        return False
    return tuple(args[:1]) in IN_PROCESS or tuple(args[:2]) in IN_PROCESS


class Cli:
    """Runs `mirapi` against one data dir, in this process where that is the same (IN_PROCESS).

    `cli(...)` picks; `process(...)` is always a real `python -m mirapi_cli.main`
    and `inline(...)` always this process.
    """

    def __init__(self, data_dir: Path, config: Path) -> None:
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "MIRAPI_DATA_DIR": str(data_dir),
            # The test's own config file: the user's may not leak in.
            "MIRAPI_CONFIG": str(config),
            "NO_COLOR": "1",
        }
        self.command = [sys.executable, "-m", "mirapi_cli.main"]

    def __call__(self, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        if runs_in_process(args):
            return self.inline(*args, stdin=stdin, **env)
        return self.process(*args, stdin=stdin, **env)

    def process(self, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        """`mirapi ARGS` as a real process; a timeout after WAIT seconds."""
        return run_process({**self.env, **env}, args, stdin=stdin)

    def inline(self, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        """`mirapi ARGS` in this process, in the environment `process` would give it."""
        return run_inline({**self.env, **env}, args, stdin=stdin)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self.command, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def state_file(self) -> Path:
        return self.data_dir / "sidecar.json"

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return data

    def start(self, *args: str) -> dict[str, Any]:
        done = self("sidecar", "start", "--listen", "127.0.0.1:0", *args)
        assert done.returncode == 0, done.stderr
        return self.state()


def run_cli(
    env: Mapping[str, str], args: Sequence[str], *, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`mirapi ARGS` with environment `env`: in this process where IN_PROCESS allows."""
    if runs_in_process(args):
        return run_inline(env, args, stdin=stdin)
    return run_process(env, args, stdin=stdin)


def run_process(
    env: Mapping[str, str], args: Sequence[str], *, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`mirapi ARGS` as a real process with environment `env`; a timeout after WAIT seconds."""
    return subprocess.run(
        [sys.executable, "-m", "mirapi_cli.main", *args],
        input=stdin,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def run_inline(
    env: Mapping[str, str], args: Sequence[str], *, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`mirapi ARGS` in this process (`invoke`), os.environ made `env` for the call.

    In a thread of its own, so that it may be called from a test's event
    loop (commands run their own) and block it as `subprocess.run` would.
    """
    done: list[tuple[int, bytes, str]] = []
    failed: list[BaseException] = []

    def call() -> None:
        try:
            done.append(invoke(args, env, stdin=stdin.encode()))
        except BaseException as error:  # re-raised in the caller's thread
            failed.append(error)

    thread = threading.Thread(target=call, name="mirapi " + " ".join(args[:2]), daemon=True)
    thread.start()
    thread.join(WAIT)
    command = [sys.executable, "-m", "mirapi_cli.main", *args]
    if failed:
        raise failed[0]
    if not done:
        raise subprocess.TimeoutExpired(command, WAIT)
    code, out, err = done[0]
    return subprocess.CompletedProcess(command, code, out.decode(errors="replace"), err)


def environment_changes(wanted: Mapping[str, str]) -> dict[str, str | None]:
    """What to set (a value) or remove (None) in os.environ to make it `wanted`."""
    changes: dict[str, str | None] = {
        name: value for name, value in wanted.items() if os.environ.get(name) != value
    }
    changes.update({name: None for name in os.environ if name not in wanted})
    return changes


def kill_leftover(state_file: Path) -> None:
    """SIGKILL the sidecar `state_file` names, only if it is still that sidecar.

    The same identity check as `mirapi sidecar stop` (start time and token):
    a pid reused since (a pytest worker, say) is left alone.
    """
    from mirapi_cli.daemon import identify
    from sidecar.process.state import SidecarState

    try:
        state = SidecarState.from_json(json.loads(state_file.read_text()))
    except (OSError, ValueError):
        return
    if not identify(state, timeout=5.0).running:
        return
    try:
        os.kill(state.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def on_terminal(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    columns: int = 80,
    until: bytes | None = None,
    then_interrupt: bool = False,
) -> tuple[int, str, str]:
    """Run `mirapi ARGS` with a pseudo-terminal `columns` wide as stdout.

    Reads until `until` appears (then Ctrl-C when `then_interrupt`) or EOF;
    returns the exit code, what the terminal showed, and stderr.
    """
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "mirapi_cli.main", *args],
        stdout=follower,
        stderr=subprocess.PIPE,
        env=dict(env),
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + WAIT
    try:
        while (until is None or until not in seen) and time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if then_interrupt:
            process.send_signal(signal.SIGINT)
        code = process.wait(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    assert process.stderr is not None
    err = process.stderr.read().decode()
    process.stderr.close()
    return code, seen.decode(errors="replace"), err


def mirapi_env(data_dir: Path) -> dict[str, str]:
    """What `run_mirapi` runs with: `data_dir`, an empty config file, no MIRAPI_REDIS."""
    config = data_dir.parent / f"{data_dir.name}.toml"
    config.write_text("")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NO_COLOR": "1",
        "MIRAPI_DATA_DIR": str(data_dir),
        "MIRAPI_CONFIG": str(config),
    }
    env.pop("MIRAPI_REDIS", None)
    return env


async def run_mirapi(
    data_dir: Path, *args: str, stdin: bytes | None = None
) -> tuple[int, bytes, str]:
    """Run `mirapi ARGS` on `data_dir` in this process (`invoke`), as `run_mirapi_process` would.

    Returns (exit code, stdout bytes, stderr text); bounded by WAIT * 2.
    """
    call = asyncio.to_thread(invoke, args, mirapi_env(data_dir), stdin=stdin or b"")
    return await asyncio.wait_for(call, WAIT * 2)


async def run_mirapi_process(
    data_dir: Path, *args: str, stdin: bytes | None = None
) -> tuple[int, bytes, str]:
    """Run `mirapi ARGS` on `data_dir` as a real process (`python -m mirapi_cli.main`).

    Returns (exit code, stdout bytes, stderr text); bounded by WAIT * 2.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirapi_cli.main",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=mirapi_env(data_dir),
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), WAIT * 2)
    assert process.returncode is not None
    return process.returncode, out, err.decode()
