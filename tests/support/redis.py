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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

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


# -- TCP servers: a 3-node Redis Cluster and a Sentinel set-up (issue 21) ----------
#
# These listen on loopback TCP ports picked by binding (a cluster node also
# needs its port + 10000 for the cluster bus); a start that loses a port to
# another process is retried on new ones. Never 6379 or 26379: a picked port
# is an ephemeral one the kernel handed out.

#: Cluster-bus offset: a node on port P also listens on P + 10000.
BUS_OFFSET = 10000
START_ATTEMPTS = 4
#: How soon a cluster node or a primary is judged down (ms): short, for quick tests.
NODE_TIMEOUT_MS = 1000
CLUSTER_NODE_ARGS = (
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
    "--appendonly", "yes",
)  # fmt: skip
#: A primary or replica: no AOF (a replica holds the copy), and no 5 s wait
#: before the first full sync (the default diskless-sync delay).
REPLICATED_ARGS = (
    "--appendonly", "no",
    "--repl-diskless-sync-delay", "0",
    "--enable-debug-command", "local",  # DEBUG SLEEP: a replica that lags
)  # fmt: skip


def redis_cli_binary() -> str:
    """The redis-cli path, or skip (fail under MIRAPI_REQUIRE_REDIS=1)."""
    redis_server_binary()
    binary = shutil.which("redis-cli")
    if binary is None:
        reason = "redis-cli is not installed (apt install redis-tools)"
        if os.environ.get("MIRAPI_REQUIRE_REDIS") == "1":
            pytest.fail(f"MIRAPI_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)
    return binary


def free_ports(count: int, bus: bool = False) -> list[int]:
    """`count` loopback ports free right now (and each port + 10000 with `bus`)."""
    import socket

    ports: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(ports) < count:
            first = socket.socket()
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            held.append(first)
            if port in ports or port == 6379 or port == 26379:
                continue
            if bus:
                if port + BUS_OFFSET > 65535:
                    continue
                second = socket.socket()
                try:
                    second.bind(("127.0.0.1", port + BUS_OFFSET))
                except OSError:
                    second.close()
                    continue
                held.append(second)
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def command(port: int, *args: str, timeout: float = 2.0) -> object:
    """One command to 127.0.0.1:`port`; its reply (an error reply raises RedisReplyError)."""
    import socket

    wire = f"*{len(args)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(arg.encode()), arg.encode()) for arg in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(wire)
        reader = conn.makefile("rb")
        return _reply(reader)


class RedisReplyError(Exception):
    """An error reply (-ERR ...) from a test server."""


def _reply(reader: Any) -> object:
    line: bytes = reader.readline()
    if not line:
        raise ConnectionError("the server closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisReplyError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else reader.read(size + 2)[:-2].decode()
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_reply(reader) for _ in range(size)]
    raise ValueError(f"unexpected reply {line!r}")


def info_field(text: object, name: str) -> str | None:
    """One `name:value` field of an INFO or CLUSTER INFO reply."""
    for line in str(text).splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None


class TcpRedis:
    """One redis-server on 127.0.0.1:`port` with its own directory (kept across restarts)."""

    def __init__(self, directory: Path, port: int, *extra: str, config: Path | None = None) -> None:
        self.directory = directory
        self.port = port
        self.extra = extra
        #: A config file read first (a Sentinel's: it rewrites it as it learns).
        self.config = config
        self.binary = redis_server_binary()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self, within: float = 10.0) -> None:
        """Start and wait until it answers; RuntimeError (and stopped) when it does not."""
        self.process = subprocess.Popen(
            [
                self.binary,
                *([str(self.config)] if self.config else []),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--logfile", "redis.log",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
        )  # fmt: skip
        deadline = time.monotonic() + within
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def answers(self) -> bool:
        try:
            return command(self.port, "PING", timeout=0.5) == "PONG"
        except (OSError, RedisReplyError, ValueError):
            # LOADING and the like are error replies: not ready yet.
            return False

    def stop(self) -> None:
        """SIGTERM (the node writes its AOF) and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: gone at once, as a crashed machine is."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.directory / "redis.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _until(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} (waited {within:.0f} s)")
        time.sleep(0.05)


class LocalCluster:
    """A Redis Cluster of 3 masters, no replicas, on free loopback ports.

    Nodes keep an AOF in their directory, so a node stopped and started again
    comes back with its keys (and its nodes.conf, so it rejoins by itself).
    """

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.directory = directory
        self.size = size
        self.nodes: list[TcpRedis] = []

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{seeds}"

    def start(self) -> None:
        cli = redis_cli_binary()
        failures: list[str] = []
        for attempt in range(START_ATTEMPTS):
            ports = free_ports(self.size, bus=True)
            self.nodes = [
                TcpRedis(self.directory / f"try{attempt}-node{port}", port, *CLUSTER_NODE_ARGS)
                for port in ports
            ]
            try:
                for node in self.nodes:
                    node.start()
            except RuntimeError as exc:
                failures.append(str(exc))
                self.stop()
                continue  # a port was taken between picking and binding: new ports
            break
        else:
            raise RuntimeError("the test cluster's nodes did not start: " + "; ".join(failures))
        created = subprocess.run(
            [
                cli, "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-500:]}")
        self.wait_ok(30)

    def state(self, node: TcpRedis) -> str | None:
        try:
            return info_field(command(node.port, "CLUSTER", "INFO"), "cluster_state")
        except (OSError, RedisReplyError, ValueError):
            return None

    def is_ok(self) -> bool:
        return all(self.state(node) == "ok" for node in self.nodes)

    def wait_ok(self, within: float) -> None:
        _until(self.is_ok, within, "the test cluster did not reach cluster_state:ok")

    def flush(self) -> None:
        for node in self.nodes:
            command(node.port, "FLUSHALL")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class LocalSentinel:
    """One primary, one replica and one Sentinel (quorum 1) on free loopback ports."""

    SERVICE = "mirapi-test"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.primary: TcpRedis | None = None
        self.replica: TcpRedis | None = None
        self.sentinel: TcpRedis | None = None

    @property
    def url(self) -> str:
        assert self.sentinel is not None
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.SERVICE}"

    def start(self) -> None:
        failures: list[str] = []
        for attempt in range(START_ATTEMPTS):
            primary_port, replica_port, sentinel_port = free_ports(3)
            base = self.directory / f"try{attempt}"
            self.primary = TcpRedis(base / "primary", primary_port, *REPLICATED_ARGS)
            replica_of = ("--replicaof", "127.0.0.1", str(primary_port))
            self.replica = TcpRedis(base / "replica", replica_port, *REPLICATED_ARGS, *replica_of)
            config = base / "sentinel" / "sentinel.conf"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {primary_port} 1\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            self.sentinel = TcpRedis(config.parent, sentinel_port, "--sentinel", config=config)
            try:
                self.primary.start()
                self.replica.start()
                self.sentinel.start()
            except RuntimeError as exc:
                failures.append(str(exc))
                self.stop()
                continue
            break
        else:
            raise RuntimeError("the test Sentinel set-up did not start: " + "; ".join(failures))
        _until(self._replica_in_sync, 20, "the test replica did not sync with its primary")
        _until(
            lambda: self.primary_port() == primary_port,
            20,
            "the test Sentinel does not name the primary",
        )

    def _replica_in_sync(self) -> bool:
        assert self.replica is not None
        try:
            info = command(self.replica.port, "INFO", "replication")
        except (OSError, RedisReplyError):
            return False
        return info_field(info, "master_link_status") == "up"

    def primary_port(self) -> int | None:
        """The primary's port as the Sentinel names it now."""
        assert self.sentinel is not None
        try:
            reply = command(self.sentinel.port, "SENTINEL", "get-master-addr-by-name", self.SERVICE)
        except (OSError, RedisReplyError):
            return None
        return int(reply[1]) if isinstance(reply, list) and len(reply) == 2 else None

    def kill_primary(self) -> None:
        assert self.primary is not None
        self.primary.kill()

    def wait_promoted(self, within: float) -> None:
        """Until the Sentinel names the replica, and the replica acts as primary."""
        assert self.replica is not None
        replica = self.replica

        def promoted() -> bool:
            if self.primary_port() != replica.port:
                return False
            try:
                role = info_field(command(replica.port, "INFO", "replication"), "role")
            except (OSError, RedisReplyError):
                return False
            return role == "master"

        _until(promoted, within, "the Sentinel did not promote the replica")

    def heal(self, within: float = 20.0) -> None:
        """After a failover: the killed primary back, as the new primary's replica.

        The Sentinel turns a returning old primary into a replica by itself;
        `primary` and `replica` then name the servers by their new roles.
        """
        assert self.primary is not None and self.replica is not None
        old, new = self.primary, self.replica
        if old.process is None:
            old.start()
            # What the Sentinel would do after a while: make it the new one's replica.
            command(old.port, "REPLICAOF", "127.0.0.1", str(new.port))
        self.primary, self.replica = new, old
        _until(self._replica_in_sync, within, "the old primary did not come back as a replica")

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.primary):
            if server is not None:
                server.stop()


class Startable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Startable)


class StartOnce(Generic[S]):
    """A session's cluster or Sentinel set-up: started on first use, failing ONCE.

    When it cannot start, the first test that needs it fails with the reason
    and every later one is skipped pointing at that failure, rather than a
    page of identical errors.
    """

    def __init__(self, setup: S) -> None:
        self._setup = setup
        self._error: str | None = None
        self._reported = False
        self._started = False

    def get(self) -> S:
        """The set-up, started; fails (the first time) or skips when it cannot start."""
        if self._started:
            return self._setup
        if self._error is None:
            try:
                self._setup.start()
                self._started = True
                return self._setup
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                self._error = str(exc)
        if self._reported:
            pytest.skip(
                f"the test Redis set-up did not start (see the first failure): {self._error}"
            )
        self._reported = True
        pytest.fail(f"the test Redis set-up did not start: {self._error}", pytrace=False)


@contextmanager
def started_once(setup: S) -> Iterator[StartOnce[S]]:
    """`setup` behind a StartOnce for a fixture's scope; stopped at its end."""
    try:
        yield StartOnce(setup)
    finally:
        setup.stop()
