"""The real `mirapi` entry point against one data dir, for end-to-end tests.

Commands run as `python -m mirapi_cli.main` with MIRAPI_DATA_DIR in the
test's tmp dir; sidecars listen on 127.0.0.1 port 0. Every wait is bounded,
and `kill_leftover` kills whatever a test left running.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
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
