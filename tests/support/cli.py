"""The real `mirapi` entry point against one data dir, for end-to-end tests.

Commands run as `python -m mirapi_cli.main` with MIRAPI_DATA_DIR in the
test's tmp dir; sidecars listen on 127.0.0.1 port 0. Every wait is bounded,
and `kill_leftover` kills whatever a test left running.
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
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
WAIT = 30.0


class Cli:
    """Runs `mirapi` against one data dir."""

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

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )

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


def kill_leftover(state_file: Path) -> None:
    """SIGKILL the sidecar `state_file` names, only if it is still that sidecar.

    The same identity check as `mirapi sidecar stop` (start time and token):
    a pid reused since (a pytest worker, say) is left alone.
    """
    from mirapi_cli.daemon import identify
    from sidecar.state import SidecarState

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


async def run_mirapi(
    data_dir: Path, *args: str, stdin: bytes | None = None
) -> tuple[int, bytes, str]:
    """Run `mirapi ARGS` on `data_dir` with an empty config file, no MIRAPI_REDIS.

    Returns (exit code, stdout bytes, stderr text); bounded by WAIT * 2.
    """
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
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirapi_cli.main",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), WAIT * 2)
    assert process.returncode is not None
    return process.returncode, out, err.decode()
