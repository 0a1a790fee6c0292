"""Metrics: what each outcome adds, the callbacks, the label bound, and the
text exposition read back by prometheus_client's own parser (as Prometheus
would), also through `GET /_mirapi/metrics`."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.app import Sidecar
from sidecar.config import Settings
from sidecar.control import make_control_app
from sidecar.exchange import Exchange
from sidecar.observability import metrics as metrics_module
from sidecar.observability.events import Event
from sidecar.observability.metrics import CONTENT_TYPE, Metrics
from sidecar.observability.observe import Outcome
from sidecar.policy import parse_policy
from sidecar.stages.retry import OVER_BUDGET

PATH = "/v1/customers/cus_SECRETPATH/charges"


def exchange(body: bytes = b"") -> Exchange:
    headers = [("x-target-url", "https://api.test" + PATH), ("content-type", "application/json")]
    return Exchange("POST", PATH, "", headers, body, parse_policy(dict(headers)), "rid")


def outcome(
    status: int = 200,
    *,
    route: str | None = None,
    host: str = "api.test",
    rescue: str | None = None,
    attempts: int = 1,
    latency: float = 0.02,
    error: str | None = None,
    ex: Exchange | None = None,
) -> Outcome:
    return Outcome(
        request_id="rid",
        time=1_700_000_000.0,
        method="POST",
        route=route,
        host=host,
        status=status,
        attempts=attempts,
        rescue=rescue,
        latency=latency,
        error=error,
        client_id="local",
        exchange=ex,
    )


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(metrics: Metrics) -> tuple[str, Samples]:
    """The rendered text, and every sample as (name, sorted labels) -> value."""
    text = (await metrics.render()).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


async def test_outcomes_become_parseable_metrics_by_route_or_host_never_a_path() -> None:
    metrics = Metrics(queue_depth=lambda: _value(4))
    rescued = exchange(b'{"amount": 2000, "currency": "usd"}')
    rescued.attempt_log += [("https://api.test" + PATH, "503", 0.1), ("https://api.test", "200", 0)]
    metrics.observe(outcome(200, rescue="retry", attempts=2, latency=0.3, ex=rescued))
    metrics.observe(outcome(201, route="payments", latency=0.004, ex=exchange()))
    metrics.observe(outcome(502, route="payments", attempts=3, latency=12.0))
    metrics.observe(outcome(400, error="pci_card_number", attempts=0, ex=exchange(b"4111...")))
    metrics.observe(outcome(401, host="", attempts=0, error="unauthorized"))
    metrics.job_finished("succeeded")
    metrics.job_finished("failed")
    metrics.job_finished("succeeded")

    text, samples = await scrape(metrics)

    assert "cus_SECRETPATH" not in text and "/v1/" not in text
    requests = "mirapi_requests_total"
    assert samples[(requests, (("route_or_host", "api.test"), ("status_class", "2xx")))] == 1
    assert samples[(requests, (("route_or_host", "payments"), ("status_class", "2xx")))] == 1
    assert samples[(requests, (("route_or_host", "payments"), ("status_class", "5xx")))] == 1
    assert samples[(requests, (("route_or_host", "api.test"), ("status_class", "4xx")))] == 1
    assert samples[(requests, (("route_or_host", "none"), ("status_class", "4xx")))] == 1
    assert samples[("mirapi_rescues_total", (("reason", "retry"),))] == 1
    assert samples[("mirapi_upstream_attempts_total", ())] == 6
    assert samples[("mirapi_pci_blocks_total", ())] == 1
    assert samples[("mirapi_rescued_capital_total", (("currency", "usd"),))] == 2000
    assert samples[("mirapi_jobs_total", (("outcome", "succeeded"),))] == 2
    assert samples[("mirapi_jobs_total", (("outcome", "failed"),))] == 1
    assert samples[("mirapi_jobs_queue_depth", ())] == 4
    # Only requests that reached an upstream: 0.004 s, 0.3 s and 12 s.
    latency = "mirapi_upstream_latency_seconds"
    assert samples[(latency + "_bucket", (("le", "0.005"),))] == 1
    assert samples[(latency + "_bucket", (("le", "0.25"),))] == 1
    assert samples[(latency + "_bucket", (("le", "0.5"),))] == 2
    assert samples[(latency + "_bucket", (("le", "10.0"),))] == 2
    assert samples[(latency + "_bucket", (("le", "30.0"),))] == 3
    assert samples[(latency + "_bucket", (("le", "+Inf"),))] == 3
    assert samples[(latency + "_count", ())] == 3
    assert math.isclose(samples[(latency + "_sum", ())], 12.304)
    # A private registry: none of the library's process or GC collectors.
    assert "process_" not in text and "python_gc" not in text


async def test_every_metric_name_is_there_from_the_first_scrape() -> None:
    metrics = Metrics(
        breaker_states=lambda: {"api.test": "open"},
        retry_budget_overflows=lambda: 0,
        queue_depth=lambda: _value(0),
    )
    text, _ = await scrape(metrics)
    names = {family.name for family in text_string_to_metric_families(text)}
    assert names == {
        "mirapi_requests",
        "mirapi_rescues",
        "mirapi_upstream_attempts",
        "mirapi_upstream_latency_seconds",
        "mirapi_breaker_state",
        "mirapi_retry_budget_overflows",
        "mirapi_jobs_queue_depth",
        "mirapi_jobs",
        "mirapi_pci_blocks",
        "mirapi_rescued_capital",
        "mirapi_llm_tokens",
        "mirapi_llm_cost_usd",
        "mirapi_llm_time_to_first_token_seconds",
    }
    assert "# TYPE mirapi_requests_total counter" in text
    assert "# TYPE mirapi_upstream_latency_seconds histogram" in text


async def test_breaker_states_and_budget_overflows_come_from_the_callbacks() -> None:
    states = {"a.test": "closed", "b.test:8443": "half_open", "c.test": "open", "d.test": "odd"}
    overflows = [7]
    metrics = Metrics(breaker_states=lambda: states, retry_budget_overflows=lambda: overflows[0])
    ex = exchange()
    ex.attempt_log.append(("https://a.test/", f"503; {OVER_BUDGET}", 0.0))
    metrics.observe(outcome(503, ex=ex))  # the callback is the count: not added twice

    _, samples = await scrape(metrics)
    assert samples[("mirapi_breaker_state", (("host", "a.test"),))] == 0
    assert samples[("mirapi_breaker_state", (("host", "b.test:8443"),))] == 1
    assert samples[("mirapi_breaker_state", (("host", "c.test"),))] == 2
    assert ("mirapi_breaker_state", (("host", "d.test"),)) not in samples
    assert samples[("mirapi_retry_budget_overflows_total", ())] == 7
    overflows[0] = 9
    _, samples = await scrape(metrics)
    assert samples[("mirapi_retry_budget_overflows_total", ())] == 9


async def test_without_a_callback_overflows_are_counted_from_the_attempt_logs() -> None:
    metrics = Metrics()
    ex = exchange()
    ex.attempt_log += [
        ("https://a.test/", "503", 0.1),
        ("https://a.test/", f"503; {OVER_BUDGET}", 0),
    ]
    metrics.observe(outcome(503, ex=ex))
    _, samples = await scrape(metrics)
    assert samples[("mirapi_retry_budget_overflows_total", ())] == 1
    assert not [key for key in samples if key[0] == "mirapi_breaker_state"]
    assert ("mirapi_jobs_queue_depth", ()) not in samples  # never known: left out


async def test_a_failing_or_slow_callback_costs_the_scrape_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script: list[object] = [3, RuntimeError("store gone"), None, "slow"]

    async def depth() -> int | None:
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        if step == "slow":
            await asyncio.sleep(10)  # far past the timeout
            return 99
        assert step is None or isinstance(step, int)
        return step

    def broken() -> dict[str, str]:
        raise RuntimeError("breakers gone")

    monkeypatch.setattr(metrics_module, "QUEUE_DEPTH_TIMEOUT", 0.05)
    metrics = Metrics(breaker_states=broken, queue_depth=depth)
    for _ in range(4):  # 3, an error, None (unknown), a timeout: the last known stays
        _, samples = await scrape(metrics)
        assert samples[("mirapi_jobs_queue_depth", ())] == 3
    assert not [key for key in samples if key[0] == "mirapi_breaker_state"]


async def test_route_or_host_values_are_bounded() -> None:
    metrics = Metrics(label_values_max=2)
    for host in ("a.test", "b.test", "c.test", "d.test", "a.test"):
        metrics.observe(outcome(200, host=host))
    _, samples = await scrape(metrics)
    by_target = {
        dict(labels)["route_or_host"]: value
        for (name, labels), value in samples.items()
        if name == "mirapi_requests_total"
    }
    assert by_target == {"a.test": 2, "b.test": 1, "other": 2}


async def test_observe_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()

    def broken(_: Outcome) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(metrics_module, "capital_of", broken)
    with caplog.at_level(logging.ERROR, "mirapi.metrics"):
        metrics.observe(outcome(200))  # logged, not raised
    assert "could not be counted" in caplog.text


async def test_the_control_endpoint_serves_the_text_format() -> None:
    metrics = Metrics()
    metrics.observe(outcome(200, rescue="cache"))
    app = make_control_app(SimpleNamespace(metrics=metrics))  # type: ignore[arg-type]
    answer = await app.test_client().get("/_mirapi/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == CONTENT_TYPE
    body = (await answer.get_data()).decode()
    families = {family.name: family for family in text_string_to_metric_families(body)}
    assert families["mirapi_rescues"].samples[0].labels == {"reason": "cache"}


async def _value(depth: int) -> int:
    return depth


async def test_the_sidecar_feeds_breaker_states_and_job_outcomes_from_its_events(
    tmp_path: Path,
) -> None:
    sidecar = Sidecar(Settings(data_dir=tmp_path))
    sidecar.events.emit(Event(time=1.0, kind="breaker", reason="open", host="api.test"))
    sidecar.events.emit(Event(time=1.0, kind="job", reason="succeeded"))
    _, samples = await scrape(sidecar.metrics)
    assert samples[("mirapi_breaker_state", (("host", "api.test"),))] == 2
    assert samples[("mirapi_jobs_total", (("outcome", "succeeded"),))] == 1
