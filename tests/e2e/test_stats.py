"""Stats and metrics end to end (issue 7): a real sidecar process started by
the real CLI, a scripted upstream in this process on 127.0.0.1, `mirapi
stats --json` in its own process, and `/_mirapi/metrics` read back with
prometheus_client's text parser, as Prometheus would. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import Cli
from tests.support.upstream import Upstream, reply

#: The sidecar adds its counts to the store about once a second.
FLUSH_WAIT = 5.0
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def stats_json(cli: Cli) -> dict[str, Any]:
    done = cli("stats", "--json")
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


async def stats_until(cli: Cli, requests: int) -> dict[str, Any]:
    """`mirapi stats --json` until it counts `requests`; fails after FLUSH_WAIT s."""
    deadline = time.monotonic() + FLUSH_WAIT
    while True:
        summary = await asyncio.to_thread(stats_json, cli)
        if summary["requests"] >= requests:
            return summary
        assert time.monotonic() < deadline, f"stats still {summary} after {FLUSH_WAIT}s"
        await asyncio.sleep(0.2)


async def test_stats_count_rescues_and_sum_rescued_capital_and_metrics_show_them(
    cli: Cli, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    sidecar = str(cli.start("--allow-private")["address"])
    target = upstream.url + "/v1/customers/cus_PRIVATE/charges"
    host = upstream.url.removeprefix("http://")
    headers = {"X-Target-URL": target, "X-Retry-Count": "2", "X-Retry-Delay": "10ms"}
    rescued = [
        (JSON, b'{"amount": 2000, "currency": "usd", "description": "order 1"}'),
        (FORM, b"amount=500&currency=usd&source=tok_visa"),
        (JSON, b'{"amount": 700, "currency": "EUR"}'),
    ]
    for content_type, body in rescued:
        upstream.then(reply(503), reply(200))  # the first attempt fails, the retry answers
        answer = await http.post(
            sidecar, headers={**headers, "Content-Type": content_type}, content=body
        )
        assert answer.status_code == 200, answer.text
    # Not rescued (the first attempt answers): its amount is no rescued capital.
    answer = await http.post(
        sidecar,
        headers={**headers, "Content-Type": JSON},
        content=b'{"amount": 99999, "currency": "usd"}',
    )
    assert answer.status_code == 200
    assert len(upstream.seen) == 7

    summary = await stats_until(cli, 4)

    assert summary["requests"] == 4
    assert summary["rescued"] == {"retry": 3}
    assert summary["rescued_capital"] == {"usd": 2500, "eur": 700}
    assert summary["success_rate"] == {"with_rescues": 1.0, "without_rescues": 0.25}
    assert summary["upstream_errors"] == {host: 3}
    assert summary["breakers_open"] == [] and summary["queue_depth"] == 0
    raw = json.dumps(summary)
    assert "cus_PRIVATE" not in raw and "tok_visa" not in raw and "order 1" not in raw

    answer = await http.get(f"{sidecar}/_mirapi/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = answer.text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in (
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
    ):
        assert name in families, name

    def value(family: str, **labels: str) -> float:
        for sample in families[family].samples:
            if sample.name in (family, family + "_total") and sample.labels == labels:
                return sample.value
        raise AssertionError(f"no {family} sample with {labels}")

    assert value("mirapi_requests", route_or_host=host, status_class="2xx") == 4
    assert value("mirapi_rescues", reason="retry") == 3
    assert value("mirapi_upstream_attempts") == 7
    assert value("mirapi_rescued_capital", currency="usd") == 2500
    assert value("mirapi_rescued_capital", currency="eur") == 700
    # Hosts only: never the path, which holds a customer id.
    assert "cus_PRIVATE" not in text and "/v1/" not in text
