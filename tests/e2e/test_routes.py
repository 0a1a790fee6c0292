"""Stored routes end to end (issue 4): real sidecars, real upstreams, the real CLI.

Sidecar processes are started by `mirapi sidecar start`, routes are written
by `mirapi routes add` / `import` into the store the sidecar uses (its data
dir, or a private redis-server), and upstreams run in this process on
127.0.0.1. A CLI command that makes upstream calls (`mirapi curl`) runs in a
thread, so that the upstreams in this event loop can answer it. Every wait
is bounded.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.support.cli import Cli, kill_leftover
from tests.support.redis import RedisServer
from tests.support.upstream import Behaviour, Upstream, echo, reply, start_upstream


@dataclass
class Node:
    """One data dir: the CLI bound to it, and the sidecar started on it."""

    cli: Cli
    url: str = ""

    def routes(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.cli("routes", *args)
        assert done.returncode == 0, done.stderr
        return done

    def start(self, *args: str) -> Node:
        self.url = str(self.cli.start("--allow-private", *args)["address"])
        return self


NewNode = Callable[[], Node]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NewNode]:
    """Data dirs, each with its CLI; every sidecar started on one is killed at the end."""
    config = tmp_path / "config.toml"
    config.write_text("")
    made: list[Cli] = []

    def make() -> Node:
        cli = Cli(tmp_path / f"data{len(made)}", config)
        made.append(cli)
        return Node(cli)

    yield make
    for cli in made:
        if cli.state_file.exists():
            cli("sidecar", "stop")
            kill_leftover(cli.state_file)


async def until_routed(http: httpx.AsyncClient, url: str, within: float = 1.0) -> httpx.Response:
    """GET `url` until it is no longer 404 route_not_found; fails after `within` s."""
    began = time.monotonic()
    while True:
        answer = await http.get(url)
        if answer.status_code != 404:
            return answer
        assert time.monotonic() - began < within, f"the route was not seen within {within}s"
        await asyncio.sleep(0.05)


@pytest.fixture
async def upstreams() -> AsyncIterator[list[Upstream]]:
    """Three scripted upstreams on 127.0.0.1."""
    started = [await start_upstream() for _ in range(3)]
    try:
        yield [server for server, _ in started]
    finally:
        for _, runner in started:
            await runner.cleanup()


async def test_priority_falls_back_to_the_next_endpoint_with_cascade_fallback(
    node: NewNode, upstreams: list[Upstream], http: httpx.AsyncClient
) -> None:
    primary, backup, _ = upstreams
    sidecar = node().start()
    # Added while the sidecar runs (embedded store): seen without a restart.
    sidecar.routes("add", "pay", "--endpoint", primary.url, "--endpoint", backup.url + "/api")
    assert (await until_routed(http, sidecar.url + "/r/pay/ready")).status_code == 200
    primary.seen.clear()
    primary.default = reply(503, b"down")
    backup.default = reply(201, b'{"charge": "ch_1"}')

    answer = await http.post(
        sidecar.url + "/v1/charges?expand=customer",
        headers={"X-Route-Key": "pay"},
        content=b"amount=100",
    )

    assert answer.status_code == 201
    assert answer.content == b'{"charge": "ch_1"}'
    assert answer.headers["x-rescued"] == "cascade_fallback"
    assert [s.path_qs for s in primary.seen] == ["/v1/charges?expand=customer"]
    assert [s.path_qs for s in backup.seen] == ["/api/v1/charges?expand=customer"]
    assert backup.seen[0].body == b"amount=100"
    # Both endpoints may receive the write: they get the same Idempotency-Key.
    keys = {s.headers.get("idempotency-key") for s in primary.seen + backup.seen}
    assert len(keys) == 1 and None not in keys

    primary.default = reply(200, b'{"ok": 1}')
    healthy = await http.get(sidecar.url + "/r/pay/v1/balance")
    assert healthy.status_code == 200 and "x-rescued" not in healthy.headers

    unknown = await http.get(sidecar.url + "/r/nope/v1/balance")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "route_not_found"


async def test_path_mode_needs_no_headers_and_keeps_path_query_and_body(
    node: NewNode, upstreams: list[Upstream], tmp_path: Path
) -> None:
    upstream = upstreams[0]
    sidecar = node()
    routes_file = tmp_path / "routes.toml"
    routes_file.write_text(
        "[routes.files]\n"
        "[[routes.files.endpoints]]\n"
        f'url = "{upstream.url}/base"\n'
        'headers = { "X-Api-Version" = "2024-06-20" }\n'
    )
    sidecar.routes("import", str(routes_file))
    sidecar.start()
    upstream.default = echo()
    body = bytes(range(256)) * 64 + b"\r\n--end--\n"
    raw_path = "/r/files/v1/items/a%2Fb%20c?q=caf%C3%A9&q=2&empty="

    # A bare HTTP client: no proxy header, nothing but what any request carries.
    async with httpx.AsyncClient(timeout=20) as bare:
        answer = await bare.put(sidecar.url + raw_path, content=body)

    assert answer.status_code == 200
    assert answer.content == body
    (seen,) = upstream.seen
    assert seen.method == "PUT"
    assert seen.path_qs == "/base/v1/items/a%2Fb%20c?q=caf%C3%A9&q=2&empty="
    assert seen.body == body
    assert seen.headers["x-api-version"] == "2024-06-20"
    assert not any(name.startswith(("x-route-", "x-mirapi-")) for name in seen.headers)


def closed_before_answering(log: list[str], wait: float = 5.0) -> Behaviour:
    """An upstream that answers only after `wait` s, noting if the caller hung up first."""

    async def behave(request: web.Request) -> web.StreamResponse:
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                if request.transport is None or request.transport.is_closing():
                    log.append("closed")
                    return web.Response(status=499)
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            log.append("closed")
            raise
        log.append("answered")
        return web.Response(body=b'{"from": "slow"}')

    return behave


async def test_a_race_is_won_by_the_fast_endpoint_and_the_slow_one_is_cut_off(
    node: NewNode, upstreams: list[Upstream], http: httpx.AsyncClient
) -> None:
    slow, fast, _ = upstreams
    sidecar = node()
    sidecar.routes(
        "add", "llm", "--strategy", "race", "--endpoint", slow.url, "--endpoint", fast.url
    )
    sidecar.start()
    slow_log: list[str] = []
    slow.default = closed_before_answering(slow_log)
    fast.default = reply(200, b'{"from": "fast"}', delay=0.05)

    began = time.monotonic()
    answer = await http.get(
        sidecar.url + "/v1/models", headers={"X-Route-Key": "llm", "X-Proxy-Debug": "on"}
    )
    took = time.monotonic() - began

    assert answer.status_code == 200
    assert answer.content == b'{"from": "fast"}'
    assert took < 1.0, f"the race took {took:.2f}s; the slow endpoint takes 5s"
    assert answer.headers["x-mirapi-upstream"].startswith(fast.url)
    assert "x-rescued" not in answer.headers
    assert len(slow.seen) == 1  # the slow endpoint was called too, at once
    for _ in range(200):
        if slow_log:
            break
        await asyncio.sleep(0.01)
    assert slow_log == ["closed"], "the losing endpoint's connection was not closed"


async def test_route_defaults_apply_and_request_headers_override_them(
    node: NewNode, upstreams: list[Upstream], http: httpx.AsyncClient
) -> None:
    upstream = upstreams[0]
    sidecar = node()
    sidecar.routes(
        "add", "flaky", "--endpoint", upstream.url,
        "--retry", "2", "--retry-delay", "10ms", "--timeout", "300ms",
    )  # fmt: skip
    sidecar.start()

    upstream.then(reply(503), reply(503), reply(200, b'{"third": true}'))
    retried = await http.get(sidecar.url + "/r/flaky/x")
    assert retried.status_code == 200
    assert retried.headers["x-rescued"] == "retry"
    assert len(upstream.seen) == 3

    upstream.then(reply(503))
    once = await http.get(sidecar.url + "/r/flaky/x", headers={"X-Retry-Count": "0"})
    assert once.status_code == 503
    assert len(upstream.seen) == 4

    upstream.default = reply(200, b'{"slow": true}', delay=0.8)
    timed_out = await http.get(sidecar.url + "/r/flaky/x", headers={"X-Retry-Count": "0"})
    assert timed_out.status_code == 504
    assert timed_out.json()["error"]["code"] == "upstream_timeout"
    patient = await http.get(
        sidecar.url + "/r/flaky/x", headers={"X-Retry-Count": "0", "X-Timeout": "5s"}
    )
    assert patient.status_code == 200 and patient.content == b'{"slow": true}'


async def test_a_route_added_through_one_sidecars_redis_is_used_at_once_by_another(
    node: NewNode,
    private_redis: RedisServer,
    upstreams: list[Upstream],
    http: httpx.AsyncClient,
) -> None:
    upstream = upstreams[0]
    first = node().start("--redis", private_redis.url)
    second = node().start("--redis", private_redis.url)
    assert (await http.get(second.url + "/r/shared/ping")).status_code == 404

    first.routes("add", "shared", "--endpoint", upstream.url, "--redis", private_redis.url)
    answer = await until_routed(http, second.url + "/r/shared/ping", within=1.0)
    assert answer.status_code == 200
    assert upstream.seen[-1].path_qs == "/ping"

    first.routes("rm", "shared", "--redis", private_redis.url)
    removed = time.monotonic()
    while (await http.get(second.url + "/r/shared/ping")).status_code != 404:
        assert time.monotonic() - removed < 1.0, "the other sidecar kept a removed route"
        await asyncio.sleep(0.05)


async def test_curl_calls_through_a_stored_route_in_process(
    node: NewNode, upstreams: list[Upstream]
) -> None:
    primary, backup, _ = upstreams
    sidecar = node()
    cli = sidecar.cli  # no sidecar yet: the route is read from the data dir's store
    done = cli("routes", "add", "stripe", "--endpoint", primary.url, "--endpoint", backup.url)
    assert done.returncode == 0, done.stderr
    primary.default = reply(502, b"bad gateway")
    backup.default = echo()

    curl = await asyncio.to_thread(
        cli, "curl", "-i", "--route", "stripe", "/v1/charges?currency=eur", "-d", "amount=100"
    )

    assert curl.returncode == 0, curl.stderr
    assert curl.stdout.endswith("amount=100")
    assert "x-rescued: cascade_fallback" in curl.stdout.lower()
    assert [s.path_qs for s in backup.seen] == ["/v1/charges?currency=eur"]
    assert backup.seen[0].method == "POST"

    missing = await asyncio.to_thread(cli, "curl", "--route", "nope", "/x")
    assert missing.returncode == 1
    assert "no route named 'nope'" in missing.stderr

    # Through the running sidecar: the path goes on the request line.
    sidecar.start()
    via = await asyncio.to_thread(
        cli, "curl", "--via", "running", "--route", "stripe", "http://ignored.test/v2/refunds?a=b"
    )
    assert via.returncode == 0, via.stderr
    assert backup.seen[-1].path_qs == "/v2/refunds?a=b"
