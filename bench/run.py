"""Pass-through benchmark for the MirApi sidecar, measured against THE BAR.

Starts a fast local upstream (nginx with a generated config when nginx is on
PATH, else ``bench/upstream.py``), starts the sidecar (``--sidecar-cmd``) or uses
an already running proxy (``--proxy-url``), then measures with wrk, upstream
directly and through the sidecar, interleaved:

* c=1  (``wrk -t1 -c1``):  p50 / p99 latency
* c=32 (``wrk -t2 -c32``): requests per second

``--reps`` repetitions (medians reported), plus the sidecar's RSS (VmRSS of the
process and its children, sampled during the runs) and CPU time per request.
Prints a table with PASS/FAIL against the bar (see /work/shared/PERFORMANCE.md):
added p50 <= 0.5 ms, >= 2000 req/s at c=32, RSS < 100 MB.

The bench is informational: the exit code is 0 whatever the verdict, and 2 only
when the bench could not run (wrk missing, upstream or sidecar failed to start).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

BAR_ADDED_P50_MS = 0.5
BAR_MIN_RPS = 2000.0
BAR_MAX_RSS_MB = 100.0
MAX_ERROR_RATIO = 0.01  # more failed/non-2xx responses than this invalidates a run

DEFAULT_SIDECAR_CMD = (
    "{python} -m mirapi_cli.main sidecar start --foreground "
    "--listen 127.0.0.1:{port} --allow-private --data-dir {data_dir}"
)
HEALTH_PATH = "/_mirapi/healthz"
UPSTREAM_BODY = '{"ok":true,"service":"bench-upstream","items":[1,2,3]}'

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""

WRK_LUA_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "MIRAPI_WRK requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.1f "
    .. "connect=%d read=%d write=%d status=%d timeout=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""
WRK_LINE = re.compile(r"^MIRAPI_WRK (.*)$", re.MULTILINE)


class BenchError(Exception):
    """The bench could not run (exit code 2)."""


# --------------------------------------------------------------------------- utilities


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> int:
    """Status code of a GET, or 0 if the server did not answer."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if 200 <= http_get(url, timeout=1.0) < 300:
            return True
        time.sleep(0.1)
    return False


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen[bytes], name: str) -> None:
    """Stop a process we started in its own session (and its group), politely first."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop on SIGTERM; sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


# --------------------------------------------------------------------------- /proc


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # field 4 (ppid) follows the parenthesised command name, which may contain spaces
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_mb(pids: list[int], key: str = "VmRSS") -> float:
    return sum(_status_kb(p, key) for p in pids) / 1024.0


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def pid_listening_on(port: int) -> int | None:
    """PID of the process holding a LISTEN socket on ``port`` (needs /proc access)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in targets:
                        found.append(int(entry))
                        break
        except OSError:
            continue
    if not found:
        return None
    # A supervisor and its worker may both hold the socket: report the topmost one.
    found_set = set(found)
    for p in found:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if ppid not in found_set:
            return p
    return found[0]


class RssSampler:
    """Samples the summed VmRSS of a process tree in a background thread."""

    def __init__(self, pid: int | None, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.max_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> float:
        if self.pid is None:
            return 0.0
        value = rss_mb(process_tree(self.pid))
        self.max_mb = max(self.max_mb, value)
        return value

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if self.pid is None:
            yield
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.sample()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()
            self.sample()


# --------------------------------------------------------------------------- upstream


@dataclass
class Upstream:
    kind: str
    url: str
    proc: subprocess.Popen[bytes]


def start_upstream(kind: str, tmp: Path) -> Upstream:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if kind == "nginx" and nginx is None:
        raise BenchError("--upstream nginx: nginx not found (apt-get install nginx)")
    if kind in ("auto", "nginx") and nginx is not None:
        port = free_port()
        ndir = tmp / "nginx"
        ndir.mkdir()
        conf = ndir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=ndir, port=port, body=UPSTREAM_BODY))
        logf = (ndir / "stdout.log").open("wb")
        proc = subprocess.Popen(
            [nginx, "-p", str(ndir), "-c", str(conf), "-e", str(ndir / "nginx-error.log")],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        if wait_http(url + "/", 10, proc):
            return Upstream("nginx", url, proc)
        stop_process(proc, "nginx")
        msg = (
            f"nginx failed to start:\n{tail(ndir / 'nginx-error.log')}\n{tail(ndir / 'stdout.log')}"
        )
        if kind == "nginx":
            raise BenchError(msg)
        log(msg + "\nfalling back to the built-in upstream")
    port = free_port()
    logpath = tmp / "upstream.log"
    proc = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "upstream.py"), "--port", str(port)],
        stdout=logpath.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_http(url + "/", 10, proc):
        stop_process(proc, "upstream")
        raise BenchError(f"built-in upstream failed to start:\n{tail(logpath)}")
    return Upstream("builtin (asyncio+uvloop)", url, proc)


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    target: str  # "direct" | "sidecar"
    concurrency: int
    rep: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    socket_errors: int
    non_2xx: int
    cpu_us_per_req: float | None = None

    @property
    def error_ratio(self) -> float:
        return (self.socket_errors + self.non_2xx) / max(self.requests, 1)


def write_lua(path: Path, headers: list[tuple[str, str]]) -> None:
    lines = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers]
    path.write_text("\n".join(lines) + "\n" + WRK_LUA_DONE)


def run_wrk(
    wrk: str, url: str, lua: Path, threads: int, conns: int, duration: float
) -> dict[str, float]:
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{conns}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(lua),
        url,
    ]
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration + 30, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(cmd)}") from exc
    m = WRK_LINE.search(out.stdout)
    if m is None:
        raise BenchError(f"could not parse wrk output ({' '.join(cmd)}):\n{out.stdout}{out.stderr}")
    return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


# --------------------------------------------------------------------------- sidecar


@dataclass
class Sidecar:
    url: str
    pid: int | None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None


def start_sidecar(cmd_template: str, tmp: Path, timeout: float) -> Sidecar:
    port = free_port()
    data_dir = tmp / "sidecar-data"
    data_dir.mkdir()
    subst = {
        "python": sys.executable,
        "port": str(port),
        "host": "127.0.0.1",
        "data_dir": str(data_dir),
    }
    argv = [tok.format(**subst) for tok in shlex.split(cmd_template)]
    log_path = tmp / "sidecar.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log(f"starting sidecar: {shlex.join(argv)}")
    try:
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise BenchError(f"could not start the sidecar: {exc}") from exc
    url = f"http://127.0.0.1:{port}"
    if not wait_http(url + HEALTH_PATH, timeout, proc):
        code = proc.poll()
        stop_process(proc, "sidecar")
        state = f"exited with code {code}" if code is not None else f"no answer in {timeout:g}s"
        raise BenchError(
            f"sidecar did not answer {HEALTH_PATH} ({state}); log tail:\n{tail(log_path)}"
        )
    return Sidecar(url, proc.pid, proc, log_path)


# --------------------------------------------------------------------------- report


@dataclass
class Summary:
    direct_p50_ms: float
    direct_p99_ms: float
    sidecar_p50_ms: float
    sidecar_p99_ms: float
    added_p50_ms: float
    direct_rps: float
    sidecar_rps: float
    rps_ratio: float
    rss_mb: float | None
    rss_peak_mb: float | None
    cpu_us_per_req_c1: float | None
    cpu_us_per_req_c32: float | None
    invalid_runs: int
    checks: dict[str, str] = field(default_factory=dict)
    verdict: str = "FAIL"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(results: list[WrkResult], rss_end: float | None, rss_peak: float | None) -> Summary:
    def pick(target: str, conc: int) -> list[WrkResult]:
        return [r for r in results if r.target == target and r.concurrency == conc]

    d1, s1, d32, s32 = (
        pick("direct", 1),
        pick("sidecar", 1),
        pick("direct", 32),
        pick("sidecar", 32),
    )
    cpu1 = [r.cpu_us_per_req for r in s1 if r.cpu_us_per_req is not None]
    cpu32 = [r.cpu_us_per_req for r in s32 if r.cpu_us_per_req is not None]
    s = Summary(
        direct_p50_ms=_median([r.p50_ms for r in d1]),
        direct_p99_ms=_median([r.p99_ms for r in d1]),
        sidecar_p50_ms=_median([r.p50_ms for r in s1]),
        sidecar_p99_ms=_median([r.p99_ms for r in s1]),
        added_p50_ms=0.0,
        direct_rps=_median([r.rps for r in d32]),
        sidecar_rps=_median([r.rps for r in s32]),
        rps_ratio=0.0,
        rss_mb=rss_end,
        rss_peak_mb=rss_peak,
        cpu_us_per_req_c1=_median(cpu1) if cpu1 else None,
        cpu_us_per_req_c32=_median(cpu32) if cpu32 else None,
        invalid_runs=sum(1 for r in results if r.error_ratio > MAX_ERROR_RATIO),
    )
    s.added_p50_ms = s.sidecar_p50_ms - s.direct_p50_ms
    s.rps_ratio = s.sidecar_rps / s.direct_rps if s.direct_rps else 0.0
    s.checks["added_p50"] = "PASS" if s.added_p50_ms <= BAR_ADDED_P50_MS else "FAIL"
    s.checks["rps_c32"] = "PASS" if s.sidecar_rps >= BAR_MIN_RPS else "FAIL"
    if s.rss_peak_mb is None:
        s.checks["rss"] = "n/a"
    else:
        s.checks["rss"] = "PASS" if s.rss_peak_mb < BAR_MAX_RSS_MB else "FAIL"
    s.checks["responses_ok"] = "PASS" if s.invalid_runs == 0 else "FAIL"
    s.verdict = "FAIL" if "FAIL" in s.checks.values() else "PASS"
    return s


def print_table(s: Summary, meta: dict[str, Any]) -> None:
    def f(v: float | None, fmt: str = "{:.3f}") -> str:
        return "n/a" if v is None else fmt.format(v)

    hdr = ", ".join(f"{k}: {v}" for k, v in meta["extra_headers"]) or "none"
    rows = [
        ("", "direct", "sidecar", "added / ratio", "bar"),
        (
            "p50 @c=1 (ms)",
            f(s.direct_p50_ms),
            f(s.sidecar_p50_ms),
            f(s.added_p50_ms),
            f"{s.checks['added_p50']} (added <= {BAR_ADDED_P50_MS} ms)",
        ),
        (
            "p99 @c=1 (ms)",
            f(s.direct_p99_ms),
            f(s.sidecar_p99_ms),
            f(s.sidecar_p99_ms - s.direct_p99_ms),
            "",
        ),
        (
            "req/s @c=32",
            f(s.direct_rps, "{:,.0f}"),
            f(s.sidecar_rps, "{:,.0f}"),
            f(s.rps_ratio, "{:.3f}x"),
            f"{s.checks['rps_c32']} (>= {BAR_MIN_RPS:,.0f} req/s)",
        ),
        (
            "RSS (MB)",
            "",
            f"{f(s.rss_mb, '{:.1f}')} (peak {f(s.rss_peak_mb, '{:.1f}')})",
            "",
            f"{s.checks['rss']} (< {BAR_MAX_RSS_MB:.0f} MB)",
        ),
        (
            "CPU/req (us) c=1|c=32",
            "",
            f"{f(s.cpu_us_per_req_c1, '{:.0f}')} | {f(s.cpu_us_per_req_c32, '{:.0f}')}",
            "",
            "",
        ),
        (
            "bad responses",
            "",
            f"{s.invalid_runs} run(s) > {MAX_ERROR_RATIO:.0%}",
            "",
            s.checks["responses_ok"],
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    print()
    print(
        f"MirApi pass-through bench: upstream {meta['upstream']} ({meta['upstream_url']}), "
        f"proxy {meta['proxy_url']}"
    )
    print(
        f"wrk: c=1 -t1, c=32 -t2, {meta['duration']:g}s x {meta['reps']} interleaved reps, "
        f"medians; extra headers: {hdr}"
    )
    print()
    for r in rows:
        print("  ".join(col.ljust(w) for col, w in zip(r, widths, strict=True)).rstrip())
    print()
    print(f"VERDICT: {s.verdict}")


# --------------------------------------------------------------------------- main


def parse_header(value: str) -> tuple[str, str]:
    name, sep, val = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {value!r}")
    return name.strip(), val.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark the MirApi sidecar's pass-through path against the bar.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--sidecar-cmd",
        default=DEFAULT_SIDECAR_CMD,
        help="command starting the sidecar in the foreground; placeholders {python}, {port}, "
        "{host}, {data_dir}; run from the repository root",
    )
    g.add_argument(
        "--proxy-url", help="bench an already running proxy instead (e.g. http://127.0.0.1:8787)"
    )
    p.add_argument(
        "--proxy-pid",
        type=int,
        help="PID of --proxy-url's process, for RSS/CPU (default: found from the listening socket)",
    )
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    p.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of untimed load first (0: none)"
    )
    p.add_argument(
        "--extra-header",
        action="append",
        default=[],
        type=parse_header,
        metavar="'Name: value'",
        help="extra request header (repeatable), e.g. 'X-Retry-Count: 3'",
    )
    p.add_argument("--path", default="/", help="request path sent to the proxy and the upstream")
    p.add_argument("--upstream", choices=["auto", "nginx", "builtin"], default="auto")
    p.add_argument("--startup-timeout", type=float, default=30.0)
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        log("wrk is not installed: apt-get install wrk  (https://github.com/wg/wrk)")
        return 2
    if args.reps < 1 or args.duration < 1:
        log("--reps must be >= 1 and --duration >= 1")
        return 2

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    tmpdir = tempfile.TemporaryDirectory(prefix="mirapi-bench-")
    tmp = Path(tmpdir.name)
    try:
        upstream = start_upstream(args.upstream, tmp)
        started.append((upstream.proc, "upstream"))
        log(f"upstream: {upstream.kind} at {upstream.url}")

        if args.proxy_url:
            url = args.proxy_url.rstrip("/")
            if not (200 <= http_get(url + HEALTH_PATH) < 300):
                raise BenchError(f"{url}{HEALTH_PATH} does not answer 2xx")
            port = int(url.rsplit(":", 1)[1].split("/")[0]) if url.count(":") >= 2 else 80
            pid = args.proxy_pid or pid_listening_on(port)
            sidecar = Sidecar(url, pid)
        else:
            sidecar = start_sidecar(args.sidecar_cmd, tmp, args.startup_timeout)
            assert sidecar.proc is not None
            started.append((sidecar.proc, "sidecar"))
        if sidecar.pid is None:
            log("sidecar PID unknown: RSS and CPU will not be reported (use --proxy-pid)")
        log(f"sidecar: {sidecar.url} (pid {sidecar.pid})")

        headers = [("X-Target-URL", upstream.url), *args.extra_header]
        lua = tmp / "headers.lua"
        write_lua(lua, headers)

        status = http_get(sidecar.url + args.path, dict(headers), timeout=5)
        if not 200 <= status < 300:
            log(f"WARNING: a request through the sidecar answered {status}, not 2xx")

        targets = {"direct": upstream.url + args.path, "sidecar": sidecar.url + args.path}
        sampler = RssSampler(sidecar.pid)
        if args.warmup > 0:
            for name in ("direct", "sidecar"):
                with sampler.running():
                    run_wrk(wrk, targets[name], lua, 2, 32, args.warmup)

        results: list[WrkResult] = []
        for rep in range(1, args.reps + 1):
            for conc, threads in ((1, 1), (32, 2)):
                for name in ("direct", "sidecar"):
                    pids = process_tree(sidecar.pid) if sidecar.pid else []
                    cpu0 = cpu_seconds(pids)
                    with sampler.running():
                        raw = run_wrk(wrk, targets[name], lua, threads, conc, args.duration)
                    cpu = cpu_seconds(pids) - cpu0
                    req = int(raw["requests"])
                    r = WrkResult(
                        target=name,
                        concurrency=conc,
                        rep=rep,
                        requests=req,
                        duration_s=raw["duration_us"] / 1e6,
                        rps=req / (raw["duration_us"] / 1e6) if raw["duration_us"] else 0.0,
                        p50_ms=raw["p50_us"] / 1000,
                        p99_ms=raw["p99_us"] / 1000,
                        mean_ms=raw["mean_us"] / 1000,
                        socket_errors=int(
                            raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
                        ),
                        non_2xx=int(raw["status"]),
                        cpu_us_per_req=(cpu * 1e6 / req)
                        if (name == "sidecar" and pids and req)
                        else None,
                    )
                    results.append(r)
                    bad = f" errors={r.socket_errors} non2xx={r.non_2xx}" if r.error_ratio else ""
                    log(
                        f"rep {rep} c={conc:<2} {name:<7} {r.rps:>9,.0f} req/s  "
                        f"p50 {r.p50_ms:.3f} ms  p99 {r.p99_ms:.3f} ms{bad}"
                    )

        rss_end = sampler.sample() if sidecar.pid else None
        rss_peak = sampler.max_mb if sidecar.pid else None
        summary = summarise(results, rss_end, rss_peak)
        meta: dict[str, Any] = {
            "upstream": upstream.kind,
            "upstream_url": upstream.url,
            "proxy_url": sidecar.url,
            "sidecar_cmd": None if args.proxy_url else args.sidecar_cmd,
            "duration": args.duration,
            "reps": args.reps,
            "extra_headers": args.extra_header,
            "path": args.path,
            "cpus": os.cpu_count(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        print_table(summary, meta)
        if args.json:
            payload = {
                "meta": meta,
                "bar": {
                    "added_p50_ms_max": BAR_ADDED_P50_MS,
                    "rps_c32_min": BAR_MIN_RPS,
                    "rss_mb_max": BAR_MAX_RSS_MB,
                },
                "summary": asdict(summary),
                "runs": [asdict(r) for r in results],
            }
            args.json.write_text(json.dumps(payload, indent=2) + "\n")
            log(f"wrote {args.json}")
        return 0
    except BenchError as exc:
        log(f"bench could not run: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 2
    finally:
        for proc, name in reversed(started):
            stop_process(proc, name)
        tmpdir.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
