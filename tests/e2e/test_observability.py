"""Issue 7 end to end, the parts not in events/replay/stats: a real sidecar
process with a rate limit, its JSON request log, and trace headers.

- over `rate_limit` the sidecar answers 429 rate_limited with Retry-After
  and the IETF RateLimit fields, then serves again once the bucket refills;
- `mirapi sidecar logs` shows one JSON line per request with its request id,
  route/host, status and latency, and never its body or a credential;
- `traceparent` and `tracestate` reach the upstream untouched.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cli import Cli, kill_leftover
from tests.support.upstream import Upstream, echo, start_upstream

BODY_MARK = "body-mark-5e1d"
CREDENTIAL = "Bearer sk_test_credential_4f2a"


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server, runner = await start_upstream()
    server.default = echo()
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[tuple[Cli, str]]:
    config = tmp_path / "config.toml"
    config.write_text('rate_limit = "3/sec"\n')
    cli = Cli(tmp_path / "data", config)
    try:
        yield cli, str(cli.start("--allow-private")["address"])
    finally:
        cli("sidecar", "stop")
        kill_leftover(cli.state_file)


async def test_over_the_rate_limit_is_429_with_the_headers_then_it_recovers(
    sidecar: tuple[Cli, str], upstream: Upstream
) -> None:
    _, url = sidecar
    target = {"X-Target-URL": upstream.url}
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        served: list[httpx.Response] = []
        # Until refused: a slow machine may refill a token between requests.
        for _ in range(20):
            answer = await http.get("/", headers=target)
            if answer.status_code != 200:
                break
            served.append(answer)
        refused = answer
        assert len(served) >= 3
        assert served[0].headers["ratelimit-limit"] == "3"
        assert served[0].headers["ratelimit-remaining"] == "2"
        assert served[-1].headers["ratelimit-remaining"] == "0"
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert int(refused.headers["retry-after"]) >= 1
        assert len(upstream.seen) == len(served)  # the refused one never left
        await asyncio.sleep(float(refused.headers["retry-after"]))
        again = await http.get("/", headers=target)
        assert again.status_code == 200


async def test_the_request_log_has_ids_and_never_bodies_or_credentials(
    sidecar: tuple[Cli, str], upstream: Upstream
) -> None:
    cli, url = sidecar
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        answer = await http.post(
            "/charges?card_hint=" + BODY_MARK,
            headers={"X-Target-URL": upstream.url, "Authorization": CREDENTIAL},
            content=json.dumps({"note": BODY_MARK}).encode(),
        )
    request_id = answer.headers["x-request-id"]
    line: dict[str, object] | None = None
    deadline = time.monotonic() + 5
    while line is None and time.monotonic() < deadline:
        shown = cli("sidecar", "logs", "-n", "200")
        assert shown.returncode == 0, shown.stderr
        for text in shown.stdout.splitlines():
            entry = json.loads(text)
            if entry.get("request_id") == request_id:
                line = entry
        await asyncio.sleep(0.1)
    assert line is not None, "no log line for the request"
    assert line["status"] == 200
    assert line["method"] == "POST"
    assert line["host"] == upstream.url.removeprefix("http://")
    assert isinstance(line["latency_ms"], float | int)
    log_text = (cli.data_dir / "sidecar.log").read_text()
    assert BODY_MARK not in log_text
    assert "sk_test_credential" not in log_text


async def test_trace_context_reaches_the_upstream_untouched(
    sidecar: tuple[Cli, str], upstream: Upstream
) -> None:
    _, url = sidecar
    trace = {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
    }
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        answer = await http.get("/", headers={"X-Target-URL": upstream.url, **trace})
    assert answer.status_code == 200
    seen = upstream.seen[-1].headers
    assert seen["traceparent"] == trace["traceparent"]
    assert seen["tracestate"] == trace["tracestate"]
