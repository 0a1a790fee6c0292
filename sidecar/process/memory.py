"""The process's own memory: malloc tuning at start-up and an on-demand report.

`tune_malloc()` runs once, before any thread starts. glibc gives each thread
that allocates its own malloc arena (up to 8 per core), and memory freed in
an arena stays there: the SQLite writer thread, the resolver's executor
threads and the job workers each kept a few MB that the event loop's thread
could never reuse, which is what made the RSS climb in steps under load
(bench/README.md, Memory). Two arenas are plenty for one event loop and a
few helper threads. `MALLOC_ARENA_MAX` in the environment still wins.

`MIRAPI_TRACEMALLOC=1` starts tracemalloc at start-up; SIGUSR2 (SIGUSR1 is
the fleet's) then writes the top allocation sites, the interpreter's block
count and malloc's own figures to the log. It costs memory and time per
allocation: for investigating, never for production.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from types import FrameType

log = logging.getLogger("mirapi")

TRACE_ENV = "MIRAPI_TRACEMALLOC"
ARENA_MAX = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number
_TOP = 25


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_malloc(env: dict[str, str] | None = None) -> bool:
    """Cap glibc's malloc arenas at ARENA_MAX; False where that is not glibc (or set already)."""
    env = dict(os.environ) if env is None else env
    libc = _libc()
    if libc is None or "MALLOC_ARENA_MAX" in env or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, ARENA_MAX))


def trim() -> None:
    """Hand freed heap pages back to the OS (glibc); nothing elsewhere."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def report(top: int = _TOP) -> str:
    """Top allocation sites (when tracing), allocated blocks and RSS, as log text."""
    import tracemalloc  # only here and when tracing: it pulls in pickle

    lines = [f"memory: {sys.getallocatedblocks()} allocated blocks, RSS {_rss_kb()} kB"]
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        lines.append(f"tracemalloc: {current / 1e6:.1f} MB now, peak {peak / 1e6:.1f} MB")
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        for group in ("filename", "lineno"):
            lines.append(f"top {top} by {group}:")
            lines += [f"  {stat}" for stat in snapshot.statistics(group)[:top]]
    return "\n".join(lines)


def _rss_kb() -> int:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def install_from_env(env: dict[str, str] | None = None) -> bool:
    """With MIRAPI_TRACEMALLOC set: trace, and log `report()` on SIGUSR2. True if on."""
    env = dict(os.environ) if env is None else env
    if env.get(TRACE_ENV, "") in ("", "0") or not hasattr(signal, "SIGUSR2"):
        return False
    import tracemalloc

    tracemalloc.start(1)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        log.warning("%s", report())

    signal.signal(signal.SIGUSR2, on_signal)
    return True
