"""A fake clock for tests: time moves only when a test (or a sleep) moves it."""

from __future__ import annotations

from sidecar.clock import Clock


class FakeClock:
    """Wall and monotonic time in one counter; `sleep` advances it at once."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def clock(self, draw: float = 1.0) -> Clock:
        """A `Clock` reading this counter; `draw` is every jitter draw."""
        return Clock(
            now=lambda: self.t, monotonic=lambda: self.t, sleep=self.sleep, random=lambda: draw
        )
