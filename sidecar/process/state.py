"""The running sidecar's state file (`sidecar.json`) and its claim on the data dir.

    {"pid": 4242, "address": "http://127.0.0.1:8742", "version": "0.1.0",
     "started_at": "2026-11-23T10:00:00Z",
     "token": "9f2c…", "start_time": "bbfc69e2-…:41061"}

The sidecar writes it (atomically) once it accepts connections and removes
it when it exits; the CLI reads it to find the sidecar (`status`, `stop`,
`curl --via`, `replay`). This module is the one owner of the format, shared
by the writer in `sidecar/process/server.py` and the reader in `mirapi_cli/daemon.py`.

A pid alone proves nothing: once the sidecar is gone the kernel hands its
pid to some other program. So the sidecar also records who it is: `token`,
random per process and reported by its healthz, and `start_time`, what the
system says of its own start (`process_start_time`), which a process that
reuses the pid cannot share. The CLI trusts the pid only when both match
(mirapi_cli/daemon.py).

`claim_data_dir` is the hard guarantee of one sidecar per data dir: an
exclusive lock on the directory itself, held for the process's life and
released by the kernel however the process ends (SIGKILL included), so it
can never go stale.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar import paths


@dataclass(frozen=True, slots=True)
class SidecarState:
    """What a running sidecar announces about itself."""

    pid: int
    address: str  # "http://127.0.0.1:8742", "http://[::1]:8742" or "unix:/path"
    version: str
    started_at: str  # ISO 8601, UTC
    # None only in a file written by an older mirapi: such a pid is never trusted.
    token: str | None = None  # this process's own token (process_token)
    start_time: str | None = None  # process_start_time of pid, as the sidecar saw it

    @classmethod
    def now(cls, address: str, version: str) -> SidecarState:
        """The state of this process, started now."""
        started = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        pid = os.getpid()
        return cls(
            pid=pid,
            address=address,
            version=version,
            started_at=started,
            token=process_token(),
            start_time=process_start_time(pid),
        )

    @classmethod
    def from_json(cls, data: object) -> SidecarState:
        """Parse the file's JSON object; ValueError when it is not one of ours."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            state = cls(
                pid=data["pid"],
                address=data["address"],
                version=data["version"],
                started_at=data["started_at"],
                token=data.get("token"),
                start_time=data.get("start_time"),
            )
        except KeyError as missing:
            raise ValueError(f"no {missing} field") from None
        if not isinstance(state.pid, int) or not isinstance(state.address, str):
            raise ValueError("pid or address has the wrong type")
        if not all(isinstance(v, str | None) for v in (state.token, state.start_time)):
            raise ValueError("token or start_time has the wrong type")
        return state

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of the state file."""
        return asdict(self)


@functools.cache
def process_token() -> str:
    """This process's random token: in its state file and its healthz answer.

    It names the process, it grants nothing: anyone who can reach healthz
    may read it.
    """
    return secrets.token_hex(16)


def process_start_time(pid: int) -> str | None:
    """When `pid` started, as an opaque string; None when it is gone or the system cannot say.

    Linux: the boot id and field 22 of /proc/PID/stat (clock ticks since
    boot), so a pid reused after a reboot at the same tick still differs.
    Elsewhere (macOS): `ps -o lstart=`, to the second. The sidecar records
    this of itself; the CLI compares it with the same call on the pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None if Path("/proc/self/stat").exists() else _ps_start_time(pid)
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or
    # parentheses itself: the fields after its last ")" start at field 3.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20:
        return None
    return f"{_boot_id()}:{fields[22 - 3]}"


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "-"


def _ps_start_time(pid: int) -> str | None:
    try:
        done = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.decode(errors="replace").strip()
    return text if done.returncode == 0 and text else None


def read_state(data_dir: Path) -> SidecarState | None:
    """The state file's content; None when there is none, ValueError when unreadable."""
    try:
        raw = paths.state_file(data_dir).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return SidecarState.from_json(json.loads(raw))
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None


def write_state(data_dir: Path, state: SidecarState) -> None:
    """Write the state file atomically: a reader sees the old file or the new, never half."""
    path = paths.state_file(data_dir)
    temporary = path.with_name(f".{path.name}.{state.pid}.tmp")
    temporary.write_text(json.dumps(state.as_dict()) + "\n")
    os.replace(temporary, path)


def remove_state(data_dir: Path, pid: int | None) -> bool:
    """Remove the state file if it still names `pid` (None: whatever it names).

    Returns whether a file was removed. A file naming another pid belongs to
    a sidecar started since, and is left alone.
    """
    if pid is not None:
        try:
            current = read_state(data_dir)
        except ValueError:
            current = None
        if current is None or current.pid != pid:
            return False
    try:
        paths.state_file(data_dir).unlink()
    except FileNotFoundError:
        return False
    return True


class DataDirBusy(Exception):
    """Another live sidecar holds the data dir."""


def claim_data_dir(data_dir: Path) -> int:
    """Lock `data_dir` for this process's lifetime; returns the fd to keep open.

    Raises DataDirBusy when another process holds it. Where flock(2) does not
    exist (Windows) nothing is locked and -1 is returned.
    """
    try:
        import fcntl
    except ImportError:
        return -1
    fd = os.open(paths.ensure_dir(data_dir), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(f"another sidecar is running with the data dir {data_dir}") from None
    return fd


def release_data_dir(fd: int) -> None:
    """Give up the claim taken by `claim_data_dir`."""
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
