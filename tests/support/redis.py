"""A private redis-server for tests, on a unix socket in a temporary directory.

Never the shared server on port 6379: every test server is started here,
listens on no TCP port, and is flushed only by the tests that own it. When
`redis-server` is missing the tests that need it are skipped with a reason,
except under `MIRAPI_REQUIRE_REDIS=1` (CI), where a skip would hide a gap and
so fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest


def redis_server_binary() -> str:
    """The redis-server path, or skip (fail under MIRAPI_REQUIRE_REDIS=1)."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (apt install redis-server)"
        if os.environ.get("MIRAPI_REQUIRE_REDIS") == "1":
            pytest.fail(f"MIRAPI_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)
    return binary


class RedisServer:
    """One redis-server process on `socket`; stop and start it again at will."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.binary = redis_server_binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the test redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None
        self.socket.unlink(missing_ok=True)

    def flush(self) -> None:
        self._command(b"*1\r\n$8\r\nFLUSHALL\r\n")

    def _answers(self) -> bool:
        try:
            return self._command(b"*1\r\n$4\r\nPING\r\n").startswith(b"+PONG")
        except OSError:
            return False

    def _command(self, raw: bytes) -> bytes:
        import socket

        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(2)
            conn.connect(str(self.socket))
            conn.sendall(raw)
            return conn.recv(64)
