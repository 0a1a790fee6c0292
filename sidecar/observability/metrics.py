"""Prometheus metrics for `GET /_mirapi/metrics` (SPEC §8).

`Metrics` is an observer. On the request path it only adds to plain dicts
(no lock: everything runs on the event loop's thread); at scrape time one
collector in a private `CollectorRegistry` turns the dicts into metric
families, and prometheus_client writes the text exposition format (0.0.4),
escaping and all. A private registry keeps out the library's default
process and GC collectors and anything another import registers globally.

    mirapi_requests_total{route_or_host,status_class}   proxied requests
    mirapi_rescues_total{reason}                         retry, cache, failover, ...
    mirapi_upstream_attempts_total                       attempts sent upstream
    mirapi_upstream_latency_seconds                      histogram, see below
    mirapi_breaker_state{host}                           0 closed, 1 half-open, 2 open
    mirapi_retry_budget_overflows_total                  retries the budget refused
    mirapi_jobs_queue_depth                              jobs with work left
    mirapi_jobs_total{outcome}                           jobs finished, by status
    mirapi_pci_blocks_total                              requests refused for a card number
    mirapi_rescued_capital_total{currency}               minor units rescued
    mirapi_llm_tokens_total{route,provider,model,kind}   LLM tokens: input, output,
                                                         cache_read, cache_write
    mirapi_llm_cost_usd_total{route,provider,model}      LLM spend, USD
    mirapi_llm_time_to_first_token_seconds               histogram, LLM streams

Labels name a stored route, else the upstream's `host[:port]`, never a
path (paths hold ids and personal data, and would make a series per
request). A route or host label gets at most `LABEL_VALUES_MAX` distinct
values; beyond that new ones count under `other`, so a client spraying
hosts cannot grow the sidecar's memory or the scrape without bound.

What the sidecar does not see per request comes from callbacks the sidecar
wires in: breaker states (sync), retry-budget overflows (sync; without one,
the overflows of proxied requests are counted from their attempt logs) and
the job queue's depth (async, refreshed by `render`, which is why `render`
is a coroutine).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from sidecar.exchange import OVER_BUDGET
from sidecar.observability.observe import Outcome
from sidecar.observability.stats import PCI_ERROR, capital_of

log = logging.getLogger("mirapi.metrics")

#: What `GET /_mirapi/metrics` answers with: the classic text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Upper bounds (seconds) of the latency histogram's buckets: from a fast
#: API call to retries backing off up to the longest sensible deadline.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Distinct values one label may take before new ones count as `other`.
LABEL_VALUES_MAX = 1000
OTHER = "other"
#: The route_or_host of a request refused before it had a target.
NO_TARGET = "none"
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
#: `render` waits this long for the queue depth, then shows the last one known.
QUEUE_DEPTH_TIMEOUT = 1.0
#: Upper bounds (seconds) of the time-to-first-token histogram.
TTFT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
#: The kinds of LLM tokens counted, as `Usage` names them.
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")

BreakerStates = Callable[[], Mapping[str, str]]
Overflows = Callable[[], int]
QueueDepth = Callable[[], Awaitable[int | None]]


def status_class(status: int) -> str:
    """`2xx`, `4xx`, ...: the status label (a label per status would add little)."""
    return f"{status // 100}xx"


class _Bounded:
    """Keeps a label's values to `limit` distinct ones; the rest become `other`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class Metrics:
    """Counts outcomes for Prometheus; `render()` gives the exposition text."""

    def __init__(
        self,
        *,
        breaker_states: BreakerStates | None = None,
        retry_budget_overflows: Overflows | None = None,
        queue_depth: QueueDepth | None = None,
        label_values_max: int = LABEL_VALUES_MAX,
    ) -> None:
        self._breaker_states = breaker_states
        self._overflows = retry_budget_overflows
        self._queue_depth = queue_depth
        self._target_label = _Bounded(label_values_max)
        self._currency_label = _Bounded(label_values_max)
        self.requests: dict[tuple[str, str], int] = {}
        self.rescues: dict[str, int] = {}
        self.attempts = 0
        self.overflows_seen = 0
        #: Per bucket of LATENCY_BUCKETS (and one past the last), not cumulative.
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.jobs: dict[str, int] = {}
        self.pci_blocks = 0
        self.capital: dict[str, int] = {}
        self.depth: int | None = None
        self._llm_label = _Bounded(label_values_max)
        #: (route, provider, model, kind) -> tokens; (route, provider, model) -> USD.
        self.llm_tokens: dict[tuple[str, str, str, str], int] = {}
        self.llm_cost: dict[tuple[str, str, str], float] = {}
        self.ttft_counts = [0] * (len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # -- the observer ------------------------------------------------------------

    def observe(self, outcome: Outcome) -> None:
        """Count `outcome`; never blocks, never raises."""
        try:
            self._count(outcome)
        except Exception:
            # A bug here must not fail the request that was just answered.
            log.exception("metrics: an outcome could not be counted")

    async def start(self) -> None:
        """Nothing to start: counting is in memory, the scrape pulls."""

    async def stop(self) -> None:
        """Nothing to write: metrics live as long as the process."""

    def job_finished(self, status: str) -> None:
        """A background job reached `status` (succeeded, failed, cancelled)."""
        self.jobs[status] = self.jobs.get(status, 0) + 1

    def _count(self, outcome: Outcome) -> None:
        target = self._target_label(outcome.route or outcome.host or NO_TARGET)
        key = (target, status_class(outcome.status))
        self.requests[key] = self.requests.get(key, 0) + 1
        if outcome.rescue is not None:
            self.rescues[outcome.rescue] = self.rescues.get(outcome.rescue, 0) + 1
        if outcome.error == PCI_ERROR:
            self.pci_blocks += 1
        if outcome.attempts > 0:
            self.attempts += outcome.attempts
            self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, outcome.latency)] += 1
            self.latency_sum += outcome.latency
        exchange = outcome.exchange
        if exchange is not None and self._overflows is None:
            self.overflows_seen += sum(
                1 for _, result, _ in exchange.attempt_log if OVER_BUDGET in result
            )
        if exchange is not None and exchange.llm is not None:
            self._count_llm(outcome)
        capital = capital_of(outcome)
        if capital is not None:
            currency = self._currency_label(capital[0])
            self.capital[currency] = self.capital.get(currency, 0) + capital[1]

    def _count_llm(self, outcome: Outcome) -> None:
        assert outcome.exchange is not None and outcome.exchange.llm is not None
        call = outcome.exchange.llm
        if call.first_token is not None:
            self.ttft_counts[bisect.bisect_left(TTFT_BUCKETS, call.first_token)] += 1
            self.ttft_sum += call.first_token
        if call.usage is None:
            return
        series = (
            self._target_label(outcome.route or outcome.host or NO_TARGET),
            call.provider or "unknown",
            self._llm_label(call.model or "unknown"),
        )
        counts = call.usage.as_dict()
        for kind in TOKEN_KINDS:
            key = (*series, kind)
            self.llm_tokens[key] = self.llm_tokens.get(key, 0) + counts[kind]
        if call.cost is not None:
            self.llm_cost[series] = self.llm_cost.get(series, 0.0) + float(call.cost)

    # -- the scrape ----------------------------------------------------------------

    async def render(self) -> bytes:
        """The metrics in Prometheus text format, the queue depth refreshed first."""
        if self._queue_depth is not None:
            try:
                async with asyncio.timeout(QUEUE_DEPTH_TIMEOUT):
                    depth = await self._queue_depth()
            except Exception as error:
                log.debug("metrics: no queue depth (%s)", type(error).__name__)
            else:
                if depth is not None:
                    self.depth = depth
        return generate_latest(self.registry)

    def breaker_states(self) -> Mapping[str, str]:
        if self._breaker_states is None:
            return {}
        try:
            return self._breaker_states()
        except Exception as error:
            log.warning("metrics: no breaker states (%s)", type(error).__name__)
            return {}

    def retry_budget_overflows(self) -> int:
        if self._overflows is None:
            return self.overflows_seen
        try:
            return self._overflows()
        except Exception as error:
            log.warning("metrics: no retry-budget overflows (%s)", type(error).__name__)
            return self.overflows_seen


class _Collector:
    """Turns a `Metrics`' counts into metric families, at scrape time only."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        requests = CounterMetricFamily(
            "mirapi_requests_total",
            "Proxied requests, by stored route (else upstream host) and status class.",
            labels=["route_or_host", "status_class"],
        )
        for (target, status), count in sorted(m.requests.items()):
            requests.add_metric([target, status], count)
        yield requests

        yield _labelled_counter(
            "mirapi_rescues_total", "Requests a rescue answered, by reason.", "reason", m.rescues
        )
        yield CounterMetricFamily(
            "mirapi_upstream_attempts_total",
            "Attempts sent upstream by proxied requests (retries included).",
            value=m.attempts,
        )

        yield _histogram(
            "mirapi_upstream_latency_seconds",
            "Seconds from arrival to the answer's head, for requests that reached an"
            " upstream (retries and their waits included).",
            LATENCY_BUCKETS,
            m.latency_counts,
            m.latency_sum,
        )

        breakers = GaugeMetricFamily(
            "mirapi_breaker_state",
            "Circuit breaker per upstream host: 0 closed, 1 half-open, 2 open.",
            labels=["host"],
        )
        for host, state in sorted(m.breaker_states().items()):
            value = BREAKER_VALUES.get(str(state))
            if value is not None:
                breakers.add_metric([host], value)
        yield breakers

        yield CounterMetricFamily(
            "mirapi_retry_budget_overflows_total",
            "Retries not made because the host's retry budget was spent.",
            value=m.retry_budget_overflows(),
        )
        if m.depth is not None:
            yield GaugeMetricFamily(
                "mirapi_jobs_queue_depth", "Background jobs with work left.", value=m.depth
            )
        yield _labelled_counter(
            "mirapi_jobs_total", "Background jobs finished, by outcome.", "outcome", m.jobs
        )
        yield CounterMetricFamily(
            "mirapi_pci_blocks_total",
            "Requests refused for a card number in the body.",
            value=m.pci_blocks,
        )
        tokens = CounterMetricFamily(
            "mirapi_llm_tokens_total",
            "LLM tokens, from the providers' own usage, by kind.",
            labels=["route", "provider", "model", "kind"],
        )
        for token_labels, count in sorted(m.llm_tokens.items()):
            tokens.add_metric(list(token_labels), count)
        yield tokens
        cost = CounterMetricFamily(
            "mirapi_llm_cost_usd_total",
            "LLM spend in USD, priced per provider and model.",
            labels=["route", "provider", "model"],
        )
        for cost_labels, usd in sorted(m.llm_cost.items()):
            cost.add_metric(list(cost_labels), usd)
        yield cost
        yield _histogram(
            "mirapi_llm_time_to_first_token_seconds",
            "Seconds from an LLM stream's arrival to its first content sent on.",
            TTFT_BUCKETS,
            m.ttft_counts,
            m.ttft_sum,
        )
        yield _labelled_counter(
            "mirapi_rescued_capital_total",
            "Stripe-style amounts (minor units) of requests a rescue saved, by currency.",
            "currency",
            m.capital,
        )


def _histogram(
    name: str, documentation: str, bounds: tuple[float, ...], counts: list[int], total: float
) -> HistogramMetricFamily:
    """A histogram family from per-bucket (not cumulative) counts."""
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else str(bound), running))
    return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=total)


def _labelled_counter(
    name: str, documentation: str, label: str, counts: Mapping[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family
