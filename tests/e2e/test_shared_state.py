"""Smart cache, circuit breaker and idempotency, end to end (issue 3).

Real sidecar processes started by the real CLI, a real upstream in this
process, and a private redis-server for the shared-state tests. Every
target is on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.support.cli import Cli, kill_leftover
from tests.support.redis import RedisServer
from tests.support.upstream import Upstream, reply, start_upstream

StartSidecar = Callable[..., str]


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[StartSidecar]:
    """Start sidecars, each on its own data dir; all are killed at the end."""
    config = tmp_path / "config.toml"
    config.write_text("")
    started: list[Cli] = []

    def start(*args: str) -> str:
        cli = Cli(tmp_path / f"data{len(started)}", config)
        started.append(cli)
        return str(cli.start("--allow-private", *args)["address"])

    yield start
    for cli in started:
        cli("sidecar", "stop")
        kill_leftover(cli.state_file)


@pytest.fixture
async def stoppable_upstream() -> AsyncIterator[tuple[Upstream, web.AppRunner]]:
    """An upstream the test may take down (connection refused afterwards)."""
    server, runner = await start_upstream()
    try:
        yield server, runner
    finally:
        await runner.cleanup()


async def test_cached_rescue_after_the_upstream_goes_down(
    start_sidecar: StartSidecar,
    stoppable_upstream: tuple[Upstream, web.AppRunner],
    http: httpx.AsyncClient,
) -> None:
    upstream, runner = stoppable_upstream
    sidecar = start_sidecar()
    upstream.then(reply(200, b'{"price": 42}'))
    headers = {"X-Target-URL": upstream.url + "/price", "X-Smart-Cache": "5m"}

    first = await http.get(sidecar, headers=headers)
    assert first.status_code == 200 and "x-rescued" not in first.headers
    await runner.cleanup()  # the upstream is gone: connection refused

    rescued = await http.get(sidecar, headers=headers)
    assert rescued.status_code == 200
    assert rescued.content == b'{"price": 42}'
    assert rescued.headers["x-rescued"] == "cache"
    assert int(rescued.headers["age"]) >= 0
    assert rescued.headers["cache-status"].startswith("mirapi; fwd=request")

    other_url = {**headers, "X-Target-URL": upstream.url + "/other"}
    failed = await http.get(sidecar, headers=other_url)
    assert failed.status_code == 502
    assert failed.json()["error"]["code"] == "upstream_unreachable"


async def test_serve_fresh_answers_without_calling_the_upstream(
    start_sidecar: StartSidecar, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    sidecar = start_sidecar()
    headers = {"X-Target-URL": upstream.url + "/rates", "X-Smart-Cache": "5m; serve-fresh"}
    upstream.then(reply(200, b'{"rate": 1}'), reply(200, b'{"rate": 2}'))

    first = await http.get(sidecar, headers=headers)
    second = await http.get(sidecar, headers=headers)

    assert first.content == second.content == b'{"rate": 1}'
    assert len(upstream.seen) == 1
    assert second.headers["cache-status"].startswith("mirapi; hit")


async def test_no_cached_answer_crosses_authorization(
    start_sidecar: StartSidecar, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    sidecar = start_sidecar()
    base = {"X-Target-URL": upstream.url + "/me", "X-Smart-Cache": "5m"}
    alice = {**base, "Authorization": "Bearer alice"}
    mallory = {**base, "Authorization": "Bearer mallory"}
    upstream.then(reply(200, b'{"user": "alice"}'), reply(503, b"down"), reply(503, b"down"))

    assert (await http.get(sidecar, headers=alice)).status_code == 200
    leaked = await http.get(sidecar, headers=mallory)
    assert leaked.status_code == 503
    assert b"alice" not in leaked.content

    rescued = await http.get(sidecar, headers=alice)
    assert rescued.status_code == 200 and rescued.headers["x-rescued"] == "cache"


async def test_breaker_opens_fails_fast_probes_once_and_closes(
    start_sidecar: StartSidecar, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    sidecar = start_sidecar()
    headers = {
        "X-Target-URL": upstream.url + "/pay",
        "X-Circuit-Breaker": "on; threshold=2; cooldown=1s",
    }
    upstream.then(reply(503, b"sick"), reply(503, b"sick"))
    for _ in range(2):
        assert (await http.get(sidecar, headers=headers)).status_code == 503
    assert len(upstream.seen) == 2

    fast = await http.get(sidecar, headers=headers)
    assert fast.status_code == 503
    assert fast.json()["error"]["code"] == "circuit_open"
    assert int(fast.headers["retry-after"]) >= 1
    assert len(upstream.seen) == 2  # no upstream call while open

    await asyncio.sleep(1.1)  # a real process: the cooldown passes for real
    upstream.default = reply(200, b'{"ok": true}', delay=0.3)
    probe, during = await asyncio.gather(
        http.get(sidecar, headers=headers),
        _after(0.1, http.get(sidecar, headers=headers)),
    )
    assert probe.status_code == 200
    assert during.status_code == 503  # one probe at a time while half-open
    assert len(upstream.seen) == 3

    closed = await http.get(sidecar, headers=headers)
    assert closed.status_code == 200
    assert len(upstream.seen) == 4


async def _after(delay: float, call: object) -> httpx.Response:
    await asyncio.sleep(delay)
    return await call  # type: ignore[misc,no-any-return]


async def test_six_concurrent_duplicates_make_one_upstream_call(
    start_sidecar: StartSidecar, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    sidecar = start_sidecar()
    upstream.default = reply(201, b'{"charge": "ch_1"}', delay=0.5)
    headers = {"X-Target-URL": upstream.url + "/charges"}

    answers = await asyncio.gather(
        *(http.post(sidecar, headers=headers, content=b"amount=100") for _ in range(6))
    )

    assert [a.status_code for a in answers] == [201] * 6
    assert {a.content for a in answers} == {b'{"charge": "ch_1"}'}
    assert len(upstream.seen) == 1


async def test_explicit_key_replays_refuses_reuse_and_in_flight(
    start_sidecar: StartSidecar, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    sidecar = start_sidecar()
    target = upstream.url + "/charges"
    keyed = {"X-Target-URL": target, "X-Proxy-Idempotency-Key": "order-7"}
    upstream.then(reply(201, b'{"charge": "ch_7"}'))

    first = await http.post(sidecar, headers=keyed, content=b"amount=700")
    replay = await http.post(sidecar, headers=keyed, content=b"amount=700")
    assert first.status_code == replay.status_code == 201
    assert replay.content == b'{"charge": "ch_7"}'
    assert replay.headers["idempotent-replayed"] == "true"
    assert len(upstream.seen) == 1

    reused = await http.post(sidecar, headers=keyed, content=b"amount=999")
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert b"999" not in reused.content

    upstream.default = reply(201, b"{}", delay=0.5)
    no_wait = {**keyed, "X-Proxy-Idempotency-Key": "order-8", "X-Idempotency-Wait": "off"}
    slow, busy = await asyncio.gather(
        http.post(sidecar, headers=no_wait, content=b"a=1"),
        _after(0.15, http.post(sidecar, headers=no_wait, content=b"a=1")),
    )
    assert slow.status_code == 201
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_in_flight"
    assert busy.headers["retry-after"] == "1"


async def test_two_sidecars_on_one_redis_share_state(
    start_sidecar: StartSidecar,
    private_redis: RedisServer,
    upstream: Upstream,
    http: httpx.AsyncClient,
) -> None:
    first = start_sidecar("--redis", private_redis.url)
    second = start_sidecar("--redis", private_redis.url)

    # Breaker: opened through the first, failing fast through the second.
    breaker = {
        "X-Target-URL": upstream.url + "/b",
        "X-Circuit-Breaker": "on; threshold=2; cooldown=30s",
    }
    upstream.then(reply(500), reply(500))
    await http.get(first, headers=breaker)
    await http.get(first, headers=breaker)
    fast = await http.get(second, headers=breaker)
    assert fast.json()["error"]["code"] == "circuit_open"
    assert len(upstream.seen) == 2

    # Cache: stored through the first, rescuing through the second.
    cached = {"X-Target-URL": upstream.url + "/c", "X-Smart-Cache": "5m"}
    upstream.then(reply(200, b'{"c": 1}'), reply(503))
    await http.get(first, headers=cached)
    rescued = await http.get(second, headers=cached)
    assert rescued.headers.get("x-rescued") == "cache"
    assert rescued.content == b'{"c": 1}'

    # Idempotency: a duplicate on the second waits for the first's answer.
    seen_before = len(upstream.seen)
    upstream.default = reply(201, b'{"id": "one"}', delay=0.6)
    charge = {"X-Target-URL": upstream.url + "/charges"}
    a, b = await asyncio.gather(
        http.post(first, headers=charge, content=b"amount=5"),
        _after(0.2, http.post(second, headers=charge, content=b"amount=5")),
    )
    assert a.status_code == b.status_code == 201
    assert a.content == b.content == b'{"id": "one"}'
    assert len(upstream.seen) == seen_before + 1


async def test_a_sidecar_keeps_proxying_while_redis_is_down(
    start_sidecar: StartSidecar,
    private_redis: RedisServer,
    upstream: Upstream,
    http: httpx.AsyncClient,
) -> None:
    sidecar = start_sidecar("--redis", private_redis.url)
    headers = {
        "X-Target-URL": upstream.url + "/x",
        "X-Smart-Cache": "5m",
        "X-Circuit-Breaker": "on",
    }
    assert (await http.get(sidecar + "/_mirapi/readyz")).status_code == 200

    private_redis.stop()
    for _ in range(3):
        answer = await http.get(sidecar, headers=headers)
        assert answer.status_code == 200
        posted = await http.post(sidecar, headers=headers, content=b"a=1")
        assert posted.status_code == 200
    ready = await http.get(sidecar + "/_mirapi/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "degraded"
    assert "redis" in ready.json()["reason"]
    assert ready.headers["retry-after"]

    private_redis.start()
    deadline = time.monotonic() + 10
    while (await http.get(sidecar + "/_mirapi/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "the sidecar did not reconnect to Redis"
        await asyncio.sleep(0.2)
    assert (await http.get(sidecar, headers=headers)).status_code == 200


async def test_the_embedded_store_keeps_cache_and_replays_across_a_restart(
    tmp_path: Path,
    stoppable_upstream: tuple[Upstream, web.AppRunner],
    http: httpx.AsyncClient,
) -> None:
    upstream, runner = stoppable_upstream
    config = tmp_path / "config.toml"
    config.write_text("")
    cli = Cli(tmp_path / "data", config)
    try:
        sidecar = str(cli.start("--allow-private")["address"])
        cached = {"X-Target-URL": upstream.url + "/c", "X-Smart-Cache": "1h"}
        keyed = {"X-Target-URL": upstream.url + "/pay", "X-Proxy-Idempotency-Key": "k-1"}
        upstream.then(reply(200, b'{"kept": 1}'), reply(201, b'{"paid": 1}'))
        assert (await http.get(sidecar, headers=cached)).status_code == 200
        assert (await http.post(sidecar, headers=keyed, content=b"x=1")).status_code == 201
        assert cli("sidecar", "stop").returncode == 0

        sidecar = str(cli.start("--allow-private")["address"])
        await runner.cleanup()
        rescued = await http.get(sidecar, headers=cached)
        assert rescued.headers.get("x-rescued") == "cache"
        assert rescued.content == b'{"kept": 1}'
        replay = await http.post(sidecar, headers=keyed, content=b"x=1")
        assert replay.status_code == 201
        assert replay.headers["idempotent-replayed"] == "true"
        assert len(upstream.seen) == 2
    finally:
        cli("sidecar", "stop")
        kill_leftover(cli.state_file)
