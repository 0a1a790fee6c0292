"""The retry budget: a sick upstream must not turn into a retry storm (SPEC §2.6).

Per upstream host, a retry may start only while

    retries in flight < max(minimum, ratio * requests in flight)

with ratio 0.2 and minimum 3 by default, as Envoy's `retry_budget` does.
A request counts as in flight to its host for the whole time the retry stage
works on that host; a retry holds one slot from the moment it is granted
(its backoff wait included) until its attempt ends.

The counters live in this process's memory, as Envoy's do per instance: many
sidecars sharing Redis each keep their own budget. That is deliberate: the
budget guards against a burst of retries from this process, and a shared
counter would put a store round trip on every request. Everything here is
plain dict arithmetic on the event loop's thread, so no lock is needed.
"""

from __future__ import annotations

DEFAULT_RATIO = 0.2
DEFAULT_MINIMUM = 3


class RetryBudget:
    """Counts requests and retries in flight per host; grants retries within budget."""

    def __init__(self, ratio: float = DEFAULT_RATIO, minimum: int = DEFAULT_MINIMUM) -> None:
        if ratio < 0 or minimum < 0:
            raise ValueError("a retry budget's ratio and minimum cannot be negative")
        self.ratio = ratio
        self.minimum = minimum
        self._requests: dict[str, int] = {}
        self._retries: dict[str, int] = {}

    def request_started(self, host: str) -> None:
        """A request to `host` begins; pair with `request_finished` in a `finally`."""
        self._requests[host] = self._requests.get(host, 0) + 1

    def request_finished(self, host: str) -> None:
        _decrement(self._requests, host)

    def try_retry(self, host: str) -> bool:
        """Take a retry slot for `host` if the budget allows; pair with `retry_finished`."""
        retries = self._retries.get(host, 0)
        if retries >= self.limit(host):
            return False
        self._retries[host] = retries + 1
        return True

    def retry_finished(self, host: str) -> None:
        _decrement(self._retries, host)

    def limit(self, host: str) -> float:
        """How many retries may be in flight to `host` at once right now."""
        return max(self.minimum, self.ratio * self._requests.get(host, 0))

    def in_flight(self, host: str) -> tuple[int, int]:
        """(requests, retries) in flight to `host`, for metrics and tests."""
        return self._requests.get(host, 0), self._retries.get(host, 0)


def _decrement(counts: dict[str, int], host: str) -> None:
    # Hosts with nothing in flight are removed: the maps stay as small as
    # the set of hosts being called right now.
    remaining = counts.get(host, 0) - 1
    if remaining > 0:
        counts[host] = remaining
    else:
        counts.pop(host, None)
