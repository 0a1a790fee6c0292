"""Per-minute counts of the last hour, for the dashboard's chart (SPEC §12).

The store keeps stats per hour (sidecar/observability/stats.py): too coarse for a chart of
the last hour. Rather than add anything to the request path, the chart reads
counts the sidecar already keeps: the Prometheus observer's running totals
(`sidecar.observability.metrics.Metrics`: requests by status class, rescues by reason).
`MinuteRing` samples those totals once a second from a background task (and
whenever a feed is read) and keeps the last total seen in each minute, in a
ring of `MINUTES` slots; a minute's counts are its total less the one
before it. A request answered in the last second of a minute may so count
in the next; nothing more is lost.

It is this process's view only (a restart empties it, and each sidecar of a
fleet has its own); the per-day totals beside the chart come from the shared
store. A rescue is counted as having saved its request (the sidecar rescues
only into an answer), so "without rescues" is answered-below-400 less the
rescues, as `mirapi stats` has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("mirapi.dashboard")

#: Slots in the ring: the last hour, the minute under way, and the one before
#: the window (its total is the first minute's baseline).
MINUTES = 61
#: Seconds between two samples when no feed is read.
SAMPLE_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Totals:
    """Running totals since the process started."""

    requests: int = 0
    ok: int = 0
    rescued: int = 0


@dataclass(frozen=True, slots=True)
class Minute:
    """What one minute counted."""

    #: Unix seconds // 60.
    minute: int
    requests: int
    ok: int
    rescued: int


def totals_of(requests: Mapping[tuple[str, str], int], rescues: Mapping[str, int]) -> Totals:
    """Totals from the metrics' counts: requests by (target, status class), rescues by reason."""
    every = ok = 0
    for (_, status), count in list(requests.items()):
        every += count
        if status in ("1xx", "2xx", "3xx"):
            ok += count
    return Totals(every, ok, sum(list(rescues.values())))


class MinuteRing:
    """The last total seen in each of the last MINUTES + 1 minutes."""

    def __init__(self, read: Callable[[], Totals]) -> None:
        self._read = read
        self._slots = MINUTES + 1
        self._minute = [-1] * self._slots
        self._totals = [Totals()] * self._slots
        self._task: asyncio.Task[None] | None = None

    def sample(self, now: float) -> None:
        """Read the totals now and keep them as the latest of `now`'s minute."""
        self.record(int(now // 60), self._read())

    def record(self, minute: int, totals: Totals) -> None:
        """Keep `totals` as the latest of `minute` (unix seconds // 60)."""
        slot = minute % self._slots
        if minute < self._minute[slot]:
            return  # older than the ring holds (a clock stepped back)
        self._minute[slot] = minute
        self._totals[slot] = totals

    def _latest(self, minute: int) -> Totals | None:
        slot = minute % self._slots
        return self._totals[slot] if self._minute[slot] == minute else None

    def series(self, now_minute: int) -> list[Minute]:
        """The MINUTES minutes up to `now_minute`, oldest first (zeros where none came)."""
        first = now_minute - MINUTES + 1
        before = self._latest(first - 1)
        minutes: list[Minute] = []
        for minute in range(first, now_minute + 1):
            totals = self._latest(minute)
            if totals is None:
                minutes.append(Minute(minute, 0, 0, 0))
                continue
            if before is None:
                # The first minute this process sampled: the totals since it started.
                before = Totals()
            minutes.append(
                Minute(
                    minute,
                    max(0, totals.requests - before.requests),
                    max(0, totals.ok - before.ok),
                    max(0, totals.rescued - before.rescued),
                )
            )
            before = totals
        return minutes

    async def start(self, clock: Callable[[], float]) -> None:
        """Sample every SAMPLE_INTERVAL seconds in the background until `stop`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(clock), name="mirapi-dashboard-minutes")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, clock: Callable[[], float]) -> None:
        while True:
            try:
                self.sample(clock())
            except Exception:
                log.exception("dashboard: the per-minute counts could not be sampled")
            # Real time: a fake clock's sleep would spin.
            await asyncio.sleep(SAMPLE_INTERVAL)
