"""Memory soak for the MirApi sidecar: does its RSS stay small under sustained load?

Starts an upstream (nginx when installed, else ``bench/upstream.py``) and a
real sidecar (``--sidecar-cmd``, foreground, 127.0.0.1), creates client keys
first (``mirapi keys create``) so every request is authenticated, then runs
wrk at c=32 in three phases of equal length while sampling the sidecar's
VmRSS (process and children, /proc) every ``--interval`` seconds:

1. plain     every request the same (X-Target-URL only)
2. cache     the same plus ``X-Smart-Cache: 5m`` (stores, then serves fresh)
3. distinct  a wrk Lua script varying the path, query and X-MirApi-Key per
             request: a stream of distinct URLs and clients, which is what
             makes any unbounded per-URL or per-client structure grow

It prints idle (before any load), the plateau (the highest sample), and the
growth over the last half (last sample of the second half against its first
sample), each against the target of issue 20: idle <= 60 MB, plateau <= 100
MB, growth <= 5 %. Exit code 0 when all three pass, 1 when one fails, 2 when
the bench could not run or any response was not 2xx (the soak is void then:
a sidecar answering 502 quickly stays small for the wrong reason).

    python bench/soak.py                    # 3 x 60 s, the issue's >= 3 minutes
    python bench/soak.py --duration 60      # 3 x 20 s while developing
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # bench/ is not a package: run.py is found through sys.path
    WRK_LUA_DONE,
    BenchError,
    http_get,
    log,
    process_tree,
    rss_mb,
    run_wrk,
    start_sidecar,
    start_upstream,
    stop_process,
)

TARGET_IDLE_MB = 60.0
TARGET_PLATEAU_MB = 100.0
TARGET_GROWTH = 0.05
KEYS = 8  # distinct client keys in the last phase
PHASES = ("plain", "cache", "distinct")
CLI = (sys.executable, "-m", "mirapi_cli.main")
# What `mirapi sidecar start` runs detached (mirapi_cli/daemon.py): the lean entry.
# bench/run.py's default, the CLI's `sidecar start --foreground`, also works.
DEFAULT_SIDECAR_CMD = (
    "{python} -m sidecar --listen 127.0.0.1:{port} --allow-private --data-dir {data_dir}"
)

# wrk Lua: every request a new path and query, the key rotating over KEYS.
# The per-thread counter starts from the thread's own address, so two threads
# never send the same URL.
DISTINCT_LUA = """
local keys = {%(keys)s}
local n = 0
local seed = 0
setup = function(thread) seed = seed + 1; thread:set("seed", seed) end
init = function(args) n = (seed or 1) * 100000000 end
request = function()
  n = n + 1
  local path = string.format("/soak/%%d/item?q=%%d&page=%%d", n %% 1000003, n, n %% 97)
  wrk.headers["X-MirApi-Key"] = keys[(n %% #keys) + 1]
  return wrk.format("GET", path)
end
"""


@dataclass
class Sample:
    t: float
    phase: str
    mb: float


def headers_lua(headers: list[tuple[str, str]]) -> str:
    return "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers)


def create_keys(data_dir: Path, count: int) -> list[str]:
    """Client keys made with the real CLI, before the sidecar starts."""
    keys = []
    for i in range(count):
        out = subprocess.run(
            [*CLI, "keys", "create", "--name", f"soak{i}", "--json", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise BenchError(f"mirapi keys create failed: {out.stderr.strip()}")
        keys.append(json.loads(out.stdout)["key"])
    return keys


class Sampler:
    """VmRSS of the sidecar's process tree every `interval` s, tagged with the phase."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid, self.interval = pid, interval
        self.phase = "idle"
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def take(self) -> Sample:
        s = Sample(time.monotonic() - self._t0, self.phase, rss_mb(process_tree(self.pid)))
        self.samples.append(s)
        log(f"  t={s.t:6.1f}s {s.phase:<8} RSS {s.mb:6.1f} MB")
        return s

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.take()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def growth_last_half(samples: list[Sample]) -> float:
    """Relative RSS change over the second half of the load samples (0.03 = 3 %)."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2 or half[0].mb <= 0:
        return 0.0
    return (half[-1].mb - half[0].mb) / half[0].mb


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Soak the sidecar at c=32 and judge its memory (issue 20).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=180.0, help="seconds of load, all phases")
    p.add_argument("--interval", type=float, default=3.0, help="seconds between RSS samples")
    p.add_argument("--idle", type=float, default=3.0, help="seconds idle before the load")
    p.add_argument("--sidecar-cmd", default=DEFAULT_SIDECAR_CMD, help="as in bench/run.py")
    p.add_argument("--upstream", choices=["auto", "nginx", "builtin"], default="auto")
    p.add_argument("--startup-timeout", type=float, default=30.0)
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the sidecar (repeatable), e.g. MIRAPI_CACHE_MAX_BYTES=1MiB",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the samples as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        log("wrk is not installed: apt-get install -y wrk")
        return 2
    if args.duration < 3:
        log("--duration must be >= 3 (one second per phase at least)")
        return 2

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    tmpdir = tempfile.TemporaryDirectory(prefix="mirapi-soak-")
    tmp = Path(tmpdir.name)
    saved_env = dict(os.environ)
    try:
        upstream = start_upstream(args.upstream, tmp)
        started.append((upstream.proc, "upstream"))
        log(f"upstream: {upstream.kind} at {upstream.url}")
        # The keys go into the store first; the sidecar then serves that data dir.
        data_dir = tmp / "keyed-data"
        keys = create_keys(data_dir, KEYS)
        for item in args.env:
            name, _, value = item.partition("=")
            os.environ[name] = value
        cmd = args.sidecar_cmd.replace("{data_dir}", str(data_dir))
        sidecar = start_sidecar(cmd, tmp, args.startup_timeout)
        assert sidecar.proc is not None and sidecar.pid is not None
        started.append((sidecar.proc, "sidecar"))
        log(f"sidecar: {sidecar.url} (pid {sidecar.pid})")

        target = [("X-Target-URL", upstream.url), ("X-MirApi-Key", keys[0])]
        if not 200 <= http_get(sidecar.url + "/", dict(target), timeout=5) < 300:
            raise BenchError("a keyed request through the sidecar did not answer 2xx")
        scripts = {
            "plain": headers_lua(target),
            "cache": headers_lua([*target, ("X-Smart-Cache", "5m")]),
            "distinct": headers_lua(target)
            + DISTINCT_LUA % {"keys": ", ".join(json.dumps(k) for k in keys)},
        }
        sampler = Sampler(sidecar.pid, args.interval)
        time.sleep(args.idle)
        idle = sampler.take().mb
        sampler.start()
        per_phase = args.duration / len(PHASES)
        bad = 0
        total = 0
        for phase in PHASES:
            sampler.phase = phase
            lua = tmp / f"{phase}.lua"
            lua.write_text(scripts[phase] + "\n" + WRK_LUA_DONE)
            raw = run_wrk(wrk, sidecar.url + "/", lua, 2, 32, per_phase)
            errors = int(raw["connect"] + raw["read"] + raw["write"] + raw["timeout"])
            non_2xx = int(raw["status"])
            total += int(raw["requests"])
            log(
                f"phase {phase}: {int(raw['requests']):,} requests, "
                f"{raw['requests'] / (raw['duration_us'] / 1e6):,.0f} req/s, "
                f"socket errors {errors}, non-2xx {non_2xx}"
            )
            bad += errors + non_2xx
        sampler.stop()
        load = [s for s in sampler.samples if s.phase != "idle"]
        plateau = max(s.mb for s in load) if load else idle
        growth = growth_last_half(load)
        checks = {
            "idle": idle <= TARGET_IDLE_MB,
            "plateau": plateau <= TARGET_PLATEAU_MB,
            "growth": growth <= TARGET_GROWTH,
        }
        print()
        print(
            f"MirApi memory soak: {total:,} requests in {args.duration:g} s "
            f"({', '.join(PHASES)}), c=32, upstream {upstream.kind}"
        )
        ok = {True: "PASS", False: "FAIL"}
        print(f"  idle     {idle:6.1f} MB   {ok[checks['idle']]} (<= {TARGET_IDLE_MB:.0f} MB)")
        print(
            f"  plateau  {plateau:6.1f} MB   {ok[checks['plateau']]} "
            f"(<= {TARGET_PLATEAU_MB:.0f} MB)"
        )
        print(
            f"  growth   {growth * 100:+6.1f} %    {ok[checks['growth']]} "
            f"(last half, <= {TARGET_GROWTH * 100:.0f} %)"
        )
        for phase in PHASES:
            mbs = [s.mb for s in load if s.phase == phase]
            if mbs:
                print(f"  {phase:<8} {min(mbs):6.1f} .. {max(mbs):6.1f} MB")
        if args.json:
            payload = {
                "idle_mb": idle,
                "plateau_mb": plateau,
                "growth": growth,
                "requests": total,
                "samples": [s.__dict__ for s in sampler.samples],
            }
            args.json.write_text(json.dumps(payload, indent=2) + "\n")
        if bad:
            print(f"\nVOID: {bad} socket errors or non-2xx answers (see the sidecar log)")
            log((tmp / "sidecar.log").read_text(errors="replace")[-3000:])
            return 2
        verdict = all(checks.values())
        print(f"\nVERDICT: {ok[verdict]}")
        return 0 if verdict else 1
    except BenchError as exc:
        log(f"soak could not run: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 2
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        for proc, name in reversed(started):
            stop_process(proc, name)
        tmpdir.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
