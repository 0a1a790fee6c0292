"""Every shell example in README.md and docs/*.md, run: the docs cannot drift.

What runs. Every fenced block whose info string is `sh` or `bash`, in the
order of its file. Other blocks (`text`, `toml`, `python`, `json`, ...) are
not run. Three HTML comments, written on the line(s) just before a fence
(only blank lines between), change that:

    <!-- not run: REASON -->  skip this sh block; the test is reported as
                              skipped with REASON, and fails without one
    <!-- file: NAME -->       write this block (any language) to NAME in the
                              sandbox's working directory, as the reader is
                              told to save it, before the next blocks run
    <!-- output -->           this block is output the previous sh block must
                              print: each non-blank line, in order, matches
                              a line of that output; `...` matches any text

How it runs, safely. One sandbox per Markdown file: a temporary HOME (the
data dir and config file where platformdirs puts them under it, so a doc
that edits ~/.config/mirapi/config.toml edits the file in use), its own
XDG dirs, and no MIRAPI_ variable of the caller's. The file's blocks run in
order in one bash (`set -euo pipefail`), each with stdin from /dev/null and
a time limit; exports, `cd` and background jobs carry over, as in a
reader's terminal. Before a block runs:

- every http(s) URL whose host is not loopback (api.stripe.com, httpbin.org,
  app.example.com, ...) is pointed at the file's local upstream
  (conftest.py), path and query kept, each host on a loopback address of
  its own (127.0.0.2, 127.0.0.3, ...); the bare hostnames (`--host
  api.stripe.com`) become the same addresses, so secrets, breakers and
  egress rules still tell the hosts apart;
- the doc ports 8742 (the sidecar), 8743 (a second sidecar), 8780 and 8781
  (servers a doc starts) are moved to free ports below the ephemeral range,
  in the text and in MIRAPI_LISTEN alike;
- a redis:// URL becomes a private redis-server on a unix socket (blocks
  that name one are skipped with the reason when redis-server is missing);
- then the block must name no address but loopback, or it is not run.

Output blocks are rewritten the same way before they are compared. The
sandbox allows private upstreams (MIRAPI_ALLOW_PRIVATE=true: every upstream
is local), sets NO_COLOR=1, a MIRAPI_MASTER_KEY and the placeholder
credentials the docs use ($STRIPE_KEY, ...). At the end every sidecar the
file started is stopped (SIGTERM, as `mirapi sidecar stop`), and whatever
else it left is killed.

Time. The docs start about 150 short-lived `mirapi` processes (half a
second of CPU each, mostly imports) and 20 sidecars, so they are bound by
CPU. Each doc is a group of its own under pytest-xdist: the docs spread over
the workers beside the rest of the suite, each run once, when the first of
its blocks is tested (that test's setup pays for the whole doc). Ports are
leased (`PortLease`), and a doc whose port was taken after all runs again,
once, on others.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import queue
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.docs.conftest import UpstreamLoop
from tests.support.cli import REPO, kill_leftover
from tests.support.redis import RedisServer

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_LANGS = frozenset({"sh", "bash"})
#: Generous: a block may derive passphrase keys (scrypt) on a machine that
#: also runs the rest of the suite in other workers.
BLOCK_TIMEOUT = 90.0
#: Docs run at once without pytest-xdist (each starts sidecars and many
#: short-lived Pythons); under xdist a worker runs one doc at a time.
PARALLEL = max(2, min(6, 2 * (os.cpu_count() or 1)))
STOP_TIMEOUT = 15.0
#: Ports the docs write literally; each file gets them, or free ones instead.
DOC_PORTS = (8742, 8743, 8780, 8781)
SIDECAR_PORT = 8742
#: What the sandbox defines for the docs' placeholders.
PLACEHOLDERS = {
    "MIRAPI_MASTER_KEY": "correct horse battery staple",
    "STRIPE_KEY": "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    "OPENAI_API_KEY": "sk-docs-openai",
    "OPENROUTER_API_KEY": "sk-or-docs-openrouter",
}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
COMMENT = re.compile(r"^[ \t]*<!--(?P<body>.*?)-->[ \t]*$")
URL = re.compile(r"\b(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>[^\s'\"<>`,)}]*)")
PORTS = re.compile(r"\b(" + "|".join(str(port) for port in DOC_PORTS) + r")\b")


# --- Reading the Markdown -----------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced block of a doc, with the directive written before it."""

    doc: str  # path relative to the repo
    line: int  # line number of the opening fence
    lang: str
    text: str
    directive: str | None = None  # "not run", "file", "output"
    argument: str = ""  # the reason, or the file name

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in RUN_LANGS and self.directive is None


def _directive(comment: str) -> tuple[str, str] | None:
    body = comment.strip()
    for name in ("not run", "file", "output"):
        if body == name or body.startswith(name + ":"):
            return name, body[len(name) :].lstrip(":").strip()
    return None


def parse_blocks(doc: str, markdown: str) -> list[Block]:
    """The fenced blocks of `markdown`, each with the directive just before it."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    pending: tuple[str, str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = FENCE.match(line)
        if fence is None:
            comment = COMMENT.match(line)
            if comment is not None:
                pending = _directive(comment.group("body"))
            elif line.strip():
                pending = None  # a directive applies only to the very next block
            index += 1
            continue
        indent, marker = fence.group("indent"), fence.group("fence")
        lang = fence.group("info").strip().split(" ")[0].lower()
        opening = index + 1  # 1-based, as editors number lines
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(marker):
            text = lines[index]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            index += 1
        name, argument = pending if pending is not None else (None, "")
        blocks.append(Block(doc, opening, lang, "\n".join(body) + "\n", name, argument))
        pending = None
        index += 1
    return blocks


def doc_blocks(path: Path) -> list[Block]:
    return parse_blocks(str(path.relative_to(REPO)), path.read_text(encoding="utf-8"))


ALL_BLOCKS = {str(path.relative_to(REPO)): doc_blocks(path) for path in DOCS}


# --- Rewriting a block for the sandbox ---------------------------------------------


@dataclass(frozen=True)
class Sandbox:
    """Where one doc's addresses go: its upstream, ports and Redis."""

    upstream_port: int
    addresses: Mapping[str, str]  # public host -> the loopback address serving it
    ports: Mapping[int, int]  # doc port -> the port used
    redis: str | None  # unix:///.../redis.sock, or None when there is none


def _host(netloc: str) -> str:
    host = netloc.rpartition("@")[2]
    if host.startswith("["):
        return host[: host.find("]") + 1].lower()
    return host.partition(":")[0].lower()


def is_loopback(host: str) -> bool:
    """Loopback by name or by address, odd spellings too (`0x7f.1`, `[::ffff:127.0.0.1]`)."""
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:  # the spellings inet_aton takes, as the egress policy does: 0x7f.1, 2130706433
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _netloc(rest: str) -> str:
    return re.split(r"[/?#]", rest, maxsplit=1)[0]


def public_hosts(text: str) -> set[str]:
    """The dotted hostnames of the http(s) URLs in `text` that are not loopback.

    Single names (`http://mirapi:8742` in a compose file) are left out: as
    bare words they are everywhere (`mirapi sidecar start`).
    """
    hosts = set()
    for match in URL.finditer(text):
        if match.group("scheme") in ("http", "https"):
            host = _host(_netloc(match.group("rest")))
            if "." in host and not is_loopback(host):
                hosts.add(host)
    return hosts


def rewrite(text: str, sandbox: Sandbox) -> str:
    """`text` with every public address, doc port and Redis URL made the sandbox's."""

    def url(match: re.Match[str]) -> str:
        scheme, rest = match.group("scheme"), match.group("rest")
        netloc = _netloc(rest)
        if scheme in ("redis", "rediss"):
            return sandbox.redis or match.group(0)
        host = _host(netloc)
        if scheme not in ("http", "https") or is_loopback(host):
            return match.group(0)
        address = sandbox.addresses.get(host, "127.0.0.1")
        return f"http://{address}:{sandbox.upstream_port}" + rest[len(netloc) :]

    text = URL.sub(url, text)
    for host in sorted(sandbox.addresses, key=len, reverse=True):
        pattern = rf"(?<![\w.-]){re.escape(host)}(?![\w-]|\.\w)"
        text = re.sub(pattern, sandbox.addresses[host], text)
    return PORTS.sub(lambda match: str(sandbox.ports[int(match.group(1))]), text)


def non_loopback(text: str) -> list[str]:
    """The addresses in `text` that would leave the machine."""
    found = []
    for match in URL.finditer(text):
        scheme, rest = match.group("scheme"), match.group("rest")
        if scheme == "unix" or scheme.startswith("file"):
            continue
        netloc = _netloc(rest)
        if scheme in ("redis", "rediss") and netloc == "":
            continue
        if not is_loopback(_host(netloc)):
            found.append(match.group(0))
    return found


def needs_redis(block: Block) -> bool:
    return "redis://" in block.text or "rediss://" in block.text


# --- Running one doc ----------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to one block."""

    status: str  # "passed", "failed", "skipped"
    message: str = ""
    output: str = ""


@dataclass(eq=False)
class DocRun:
    """Runs one doc's blocks in one bash, in its own sandbox directory."""

    doc: str
    blocks: list[Block]
    sandbox: Sandbox
    root: Path
    outcomes: dict[int, Outcome] = field(default_factory=dict)

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def home(self) -> Path:
        return self.root / "home"

    # Where platformdirs puts them on Linux under this HOME, so that a doc
    # that edits ~/.config/mirapi/config.toml edits the file in use.
    @property
    def config_file(self) -> Path:
        return self.home / ".config" / "mirapi" / "config.toml"

    @property
    def data_dir(self) -> Path:
        return self.home / ".local" / "share" / "mirapi"

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("MIRAPI_", "XDG_"))}
        # The docs start ~150 Pythons: with bytecode caching off, each would
        # compile this checkout's modules again (a tenth of a second apiece).
        keep.pop("PYTHONDONTWRITEBYTECODE", None)
        home = self.home
        bin_dir = Path(sys.executable).parent
        return {
            **keep,
            **PLACEHOLDERS,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "PATH": os.pathsep.join([str(self.root / "bin"), str(bin_dir), keep.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join([str(REPO), keep.get("PYTHONPATH", "")]),
            "MIRAPI_DATA_DIR": str(self.data_dir),
            "MIRAPI_CONFIG": str(self.config_file),
            "MIRAPI_ALLOW_PRIVATE": "true",
            "MIRAPI_LISTEN": f"127.0.0.1:{self.sandbox.ports[SIDECAR_PORT]}",
            "NO_COLOR": "1",
            "TERM": "dumb",
            "COLUMNS": "120",
        }

    def prepare(self) -> None:
        for path in (self.work, self.root / "bin", self.root / "blocks", self.data_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("")
        if shutil.which("mirapi", path=str(Path(sys.executable).parent)) is None:
            # Not installed as a console script (PYTHONPATH only): the same CLI.
            shim = self.root / "bin" / "mirapi"
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mirapi_cli.main "$@"\n')
            shim.chmod(0o755)

    def run(self) -> dict[int, Outcome]:
        self.prepare()
        shell = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.work,
            env=self.env(),
            encoding="utf-8",
            errors="replace",  # a binary answer must not stop the reader
            # A process group of its own: the clean-up kills bash and all it
            # started in the background at once.
            process_group=0,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(shell, lines), daemon=True)
        reader.start()
        try:
            self._send(shell, "set -euo pipefail\n")
            self._run_blocks(shell, lines)
        finally:
            self._clean_up(shell)
        return self.outcomes

    def _send(self, shell: subprocess.Popen[str], command: str) -> bool:
        assert shell.stdin is not None
        try:
            shell.stdin.write(command)
            shell.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def _run_blocks(self, shell: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        failed: Block | None = None
        last_output = ""
        redis_missing = self.sandbox.redis is None
        for number, block in enumerate(self.blocks):
            if block.directive == "file":
                target = self.work / block.argument
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(rewrite(block.text, self.sandbox))
                continue
            if block.directive == "output":
                expected = rewrite(block.text, self.sandbox)  # the URLs the commands used
                self.outcomes[block.line] = _check_output(block, expected, last_output, failed)
                continue
            if block.lang not in RUN_LANGS:
                continue
            if block.directive == "not run":
                self.outcomes[block.line] = Outcome("skipped", f"not run: {block.argument}")
                continue
            if failed is not None:
                message = f"not run: the block at {failed.id} failed"
                self.outcomes[block.line] = Outcome("skipped", message)
                continue
            if needs_redis(block) and redis_missing:
                self.outcomes[block.line] = Outcome("skipped", "redis-server is not installed")
                continue
            outcome = self._run_one(shell, lines, number, block)
            self.outcomes[block.line] = outcome
            last_output = outcome.output
            if outcome.status == "failed":
                failed = block

    def _run_one(
        self,
        shell: subprocess.Popen[str],
        lines: queue.Queue[str | None],
        number: int,
        block: Block,
    ) -> Outcome:
        text = rewrite(block.text, self.sandbox)
        leaks = non_loopback(text)
        if leaks:
            return Outcome("failed", f"would leave the machine after rewriting: {leaks}", text)
        script = self.root / "blocks" / f"{number:03d}.sh"
        script.write_text(text)
        token = secrets.token_hex(8)
        end = f"@@{token}@@"
        if not self._send(shell, f"source {script} </dev/null\nprintf '\\n%s\\n' '{end}'\n"):
            return Outcome("failed", "the shell had already exited", text)
        output: list[str] = []
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                if shell.poll() is not None and lines.empty():
                    return self._failure(block, text, output, f"exit status {shell.returncode}")
                if time.monotonic() > deadline:
                    return self._failure(
                        block, text, output, f"timed out after {BLOCK_TIMEOUT:g} s"
                    )
                continue
            if line is None:  # the pipe closed: the shell (and what it started) ended
                shell.wait(timeout=5)
                return self._failure(block, text, output, f"exit status {shell.returncode}")
            if line.rstrip("\n") == end:
                if output and output[-1] == "\n":
                    output.pop()
                return Outcome("passed", "", "".join(output))
            output.append(line)

    def _failure(self, block: Block, text: str, output: list[str], why: str) -> Outcome:
        log = self.data_dir / "sidecar.log"
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        message = (
            f"{block.id}: {why}\n--- the block, as run:\n{text}--- its output:\n"
            + "".join(output)
            + ("\n--- sidecar.log (tail):\n" + "\n".join(tail) if tail else "")
        )
        return Outcome("failed", message, "".join(output))

    def _clean_up(self, shell: subprocess.Popen[str]) -> None:
        # Every sidecar the doc left running (any data dir under the sandbox):
        # SIGTERM as `mirapi sidecar stop` sends it, without paying for a CLI.
        for state in self.root.rglob("sidecar.json"):
            _stop(state)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)  # bash and what it started in the background
        with contextlib.suppress(subprocess.TimeoutExpired):
            shell.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _stop(state: Path) -> None:
    """Stop the sidecar whose state file this is: SIGTERM, then SIGKILL after a while."""
    try:
        pid = int(json.loads(state.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and not _gone(pid):
            time.sleep(0.05)
    kill_leftover(state)


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped yet (a container's PID 1)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except ProcessLookupError:
        return True
    except OSError:
        return False  # no /proc (macOS): alive, as far as we can tell
    return stat.rpartition(")")[2].split()[0] == "Z"


def _pump(shell: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert shell.stdout is not None
    for line in shell.stdout:
        lines.put(line)
    lines.put(None)


def missing_line(expected: str, output: str) -> str | None:
    """The first expected line that `output` lacks, in order; None when all match."""
    got = [line.strip() for line in output.splitlines()]
    position = 0
    for want in expected.splitlines():
        if not want.strip():
            continue
        pattern = ".*".join(re.escape(part) for part in want.strip().split("..."))
        while position < len(got) and not re.fullmatch(pattern, got[position]):
            position += 1
        if position == len(got):
            return want.strip()
        position += 1
    return None


def _check_output(block: Block, expected: str, output: str, failed: Block | None) -> Outcome:
    if failed is not None:
        return Outcome("skipped", f"not checked: the block at {failed.id} failed")
    missing = missing_line(expected, output)
    if missing is not None:
        return Outcome("failed", f"{block.id}: no line matches {missing!r} in:\n{output}")
    return Outcome("passed")


# --- Running them all ---------------------------------------------------------------


# Below Linux's ephemeral range (32768-60999): no bind to port 0 and no
# outgoing connection can take one of these between the moment it is picked
# and the moment the doc's sidecar binds it.
PRIVATE_PORTS = range(20000, 32000)
#: One lock file per port in use: other docs, other workers and another copy
#: of the suite on this machine skip a port whose lock is held.
PORT_LOCKS = Path(tempfile.gettempdir()) / "mirapi-test-ports"
#: What a sidecar or server says when its port was taken after all.
PORT_TAKEN = "Address already in use"


class PortLease:
    """Ports of the private range held for one doc run, released by `release`.

    A port is held by an exclusive flock on its lock file (dropped by the
    kernel if this process dies), and taken only if a bind without
    SO_REUSEADDR finds it wholly free at that moment: nobody listens on it
    and no connection lingers on it.
    """

    def __init__(self) -> None:
        self._locks: list[int] = []

    def take(self) -> int:
        PORT_LOCKS.mkdir(parents=True, exist_ok=True)
        start = random.randrange(len(PRIVATE_PORTS))
        for step in range(len(PRIVATE_PORTS)):
            port = PRIVATE_PORTS[(start + step) % len(PRIVATE_PORTS)]
            lock = os.open(PORT_LOCKS / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(lock)
                continue
            if _port_is_free(port):
                self._locks.append(lock)
                return port
            os.close(lock)  # closing drops the flock
        raise RuntimeError("no free loopback port in 20000-31999")

    def ports(self) -> dict[int, int]:
        """A port of the private range for each doc port.

        Never the doc's own port: 8742 is where a developer's real sidecar
        listens, and a port left held by a run that was killed is taken too.
        """
        return {port: self.take() for port in DOC_PORTS}

    def release(self) -> None:
        for lock in self._locks:
            os.close(lock)
        self._locks.clear()


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def redis_dirs() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="mirapi-docs-redis-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _selected_docs(session: pytest.Session) -> list[str]:
    """The docs whose blocks this session tests (`-k quickstart` runs only that one)."""
    docs = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and isinstance(callspec.params.get("block"), Block):
            docs.add(callspec.params["block"].doc)
    return [doc for doc in ALL_BLOCKS if doc in docs]


@dataclass
class Docs:
    """Runs each doc once, when the first of its blocks is tested; outcomes by block id.

    Under pytest-xdist every doc is a group of its own (`xdist_group`), so
    the docs are spread over the workers and run beside the rest of the
    suite, one doc at a time per worker, each in its own sandbox with its
    own sidecars, ports and Redis. Without xdist the selected docs run
    PARALLEL at a time, the longest first, when the first one is asked for.
    """

    upstreams: UpstreamLoop
    redis_dirs: Path
    selected: list[str]
    have_redis: bool
    done: dict[str, dict[str, Outcome]] = field(default_factory=dict)
    #: The docs whose failed run a test has reported already.
    reported: set[str] = field(default_factory=set)

    def outcomes(self, doc: str) -> dict[str, Outcome]:
        if doc not in self.done:
            if os.environ.get("PYTEST_XDIST_WORKER"):
                self.done[doc] = self.run(doc)
            else:
                pending = [name for name in self.selected if name not in self.done]
                pending.sort(key=lambda name: _weight(ALL_BLOCKS[name]), reverse=True)
                with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
                    self.done.update(zip(pending, pool.map(self.run, pending), strict=True))
        return self.done[doc]

    def run(self, doc: str) -> dict[str, Outcome]:
        """Run `doc`: again, once, with other ports if one was taken after all."""
        try:
            outcomes = self._run_once(doc)
            if any(PORT_TAKEN in outcome.message for outcome in outcomes.values()):
                outcomes = self._run_once(doc)
        except Exception as error:
            # The run itself broke (not a block): one test says so, not every block.
            return {RUN_FAILED: Outcome("failed", f"{doc} could not be run: {error!r}")}
        return outcomes

    def _run_once(self, doc: str) -> dict[str, Outcome]:
        blocks = ALL_BLOCKS[doc]
        server = None
        lease = PortLease()
        try:
            redis = None
            if self.have_redis and any(needs_redis(block) for block in blocks):
                server = RedisServer(Path(tempfile.mkdtemp(dir=self.redis_dirs)))
                server.start()
                redis = server.url
            used = [block for block in blocks if block.runs or block.directive == "file"]
            hosts = set().union(*(public_hosts(block.text) for block in used))
            upstream = self.upstreams.start(sorted(hosts))
            sandbox = Sandbox(upstream.port, upstream.addresses, lease.ports(), redis)
            root = Path(tempfile.mkdtemp(prefix="mirapi-docs-"))
            per_line = DocRun(doc, blocks, sandbox, root).run()
        finally:
            lease.release()
            if server is not None:
                server.stop()
        return {f"{doc}:{line}": outcome for line, outcome in per_line.items()}


@pytest.fixture(scope="module")
def docs(request: pytest.FixtureRequest, upstreams: UpstreamLoop, redis_dirs: Path) -> Docs:
    """The docs of this session, each run when the first of its blocks is tested."""
    for tool in ("bash", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: the docs' examples use it")
    have_redis = shutil.which("redis-server") is not None
    if not have_redis and os.environ.get("MIRAPI_REQUIRE_REDIS") == "1":
        pytest.fail("MIRAPI_REQUIRE_REDIS=1 but redis-server is not installed")
    return Docs(upstreams, redis_dirs, _selected_docs(request.session), have_redis)


def _weight(blocks: list[Block]) -> float:
    """A guess at how long a doc takes: its sidecar starts, secrets and other commands."""
    text = "".join(block.text for block in blocks if block.runs)
    return (
        3.0 * text.count("sidecar start")
        + 2.5 * text.count("secrets add")
        + 0.5 * text.count("mirapi ")
        + 1.0 * text.count("sleep ")
    )


def _tested(blocks: list[Block]) -> Iterator[Block]:
    for block in blocks:
        if block.lang in RUN_LANGS and block.directive in (None, "not run"):
            yield block
        elif block.directive == "output":
            yield block


#: Where a doc's outcomes say that its run itself failed.
RUN_FAILED = "(the run of the doc)"

TESTED = [block for blocks in ALL_BLOCKS.values() for block in _tested(blocks)]


# Each doc is a group: its blocks run in order on one worker, and the docs
# spread over the workers. The first block tested pays for the whole doc.
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "block",
    [
        pytest.param(block, id=block.id, marks=pytest.mark.xdist_group(f"doc:{block.doc}"))
        for block in TESTED
    ],
)
def test_doc_block(block: Block, docs: Docs) -> None:
    """The block ran and exited 0 (or printed what the doc shows), or is skipped with its reason."""
    results = docs.outcomes(block.doc)
    failed = results.get(RUN_FAILED)
    if failed is not None:
        # Once, in the first of its blocks tested; the others say where.
        if block.doc in docs.reported:
            pytest.skip(f"not run: the run of {block.doc} failed (reported once, above)")
        docs.reported.add(block.doc)
        pytest.fail(failed.message, pytrace=False)
    outcome = results.get(block.id)
    assert outcome is not None, f"{block.id} was never run"
    if outcome.status == "skipped":
        pytest.skip(f"{block.id}: {outcome.message}")
    assert outcome.status == "passed", outcome.message


# --- The rules themselves -----------------------------------------------------------


def test_every_skip_has_a_reason_and_every_directive_fits_its_block() -> None:
    problems = []
    for blocks in ALL_BLOCKS.values():
        previous: Block | None = None
        for block in blocks:
            if block.directive == "not run":
                if not block.argument:
                    problems.append(f"{block.id}: `not run` needs a reason: <!-- not run: WHY -->")
                if block.lang not in RUN_LANGS:
                    problems.append(f"{block.id}: `not run` on a {block.lang!r} block, never run")
            if block.directive == "file" and not block.argument:
                problems.append(f"{block.id}: `file` needs a name: <!-- file: NAME -->")
            if block.directive == "output" and (previous is None or not previous.runs):
                problems.append(f"{block.id}: `output` must follow an sh block that runs")
            if block.lang in RUN_LANGS or block.directive == "output":
                previous = block
    assert not problems, "\n".join(problems)


def test_the_docs_run_examples() -> None:
    """Skips stay rare: most shell examples run."""
    shell = [b for blocks in ALL_BLOCKS.values() for b in blocks if b.lang in RUN_LANGS]
    skipped = [block for block in shell if block.directive == "not run"]
    assert len(shell) >= 40
    assert len(skipped) * 4 <= len(shell), [block.id for block in skipped]


def test_rewriting_leaves_only_loopback_addresses() -> None:
    sandbox = Sandbox(
        5000,
        {"api.stripe.com": "127.0.0.2", "backup.example": "127.0.0.3"},
        dict.fromkeys(DOC_PORTS, 6000),
        "unix:///tmp/r.sock",
    )
    text = (
        "curl -s http://127.0.0.1:8742/v1/charges -H 'X-Target-URL: https://api.stripe.com'\n"
        "  -H 'X-Failover-URL: https://backup.example/v1,http://[2001:db8::1]:8080/x?y=1'\n"
        "mirapi secrets add s --host api.stripe.com  # not api.stripe.com.evil\n"
        'url = "https://user@openrouter.ai/api"; redis://10.0.0.5:6379/0\n'
    )
    rewritten = rewrite(text, sandbox)
    assert non_loopback(rewritten) == []
    assert "http://127.0.0.1:6000/v1/charges" in rewritten
    assert "X-Target-URL: http://127.0.0.2:5000'" in rewritten
    assert "http://127.0.0.3:5000/v1,http://127.0.0.1:5000/x?y=1" in rewritten
    assert "--host 127.0.0.2 " in rewritten and "api.stripe.com.evil" in rewritten
    assert 'url = "http://127.0.0.1:5000/api"' in rewritten
    assert "unix:///tmp/r.sock" in rewritten


def test_every_block_that_runs_names_only_loopback_once_rewritten() -> None:
    leaks = {}
    for blocks in ALL_BLOCKS.values():
        used = [block for block in blocks if block.runs or block.directive == "file"]
        hosts = sorted(set().union(*(public_hosts(block.text) for block in used)))
        addresses = {host: f"127.0.0.{number}" for number, host in enumerate(hosts, start=2)}
        sandbox = Sandbox(5000, addresses, dict.fromkeys(DOC_PORTS, 6000), "unix:///tmp/r.sock")
        for block in used:
            found = non_loopback(rewrite(block.text, sandbox))
            if found:
                leaks[block.id] = found
    assert not leaks


def test_the_leak_check_sees_what_rewriting_missed() -> None:
    text = (
        "curl https://api.stripe.com/v1 http://10.1.2.3/ ws://h.example http://localhost:1/"
        " http://0x7f.1:22/ http://[::ffff:127.0.0.1]:22/ http://2130706433/ http://0xa9.254.1/"
    )
    assert non_loopback(text) == [
        "https://api.stripe.com/v1",
        "http://10.1.2.3/",
        "ws://h.example",
        "http://0xa9.254.1/",
    ]


def test_directives_are_read_from_the_lines_before_a_fence() -> None:
    markdown = (
        "<!-- not run: needs systemd -->\n\n```sh\nsystemctl --user start mirapi\n```\n"
        "<!-- not run -->\ntext between\n```bash\necho hi\n```\n"
        "  <!-- file: a.toml -->\n  ```toml\n  x = 1\n  ```\n"
        "```sh\necho out\n```\n<!-- output -->\n```text\nou...\n```\n"
    )
    blocks = parse_blocks("x.md", markdown)
    assert [(b.lang, b.directive, b.argument) for b in blocks] == [
        ("sh", "not run", "needs systemd"),
        ("bash", None, ""),
        ("toml", "file", "a.toml"),
        ("sh", None, ""),
        ("text", "output", ""),
    ]
    assert blocks[2].text == "x = 1\n"
    assert missing_line(blocks[4].text, "noise\nout\n") is None
    assert missing_line("a\nb\n", "b\na\n") == "b"
