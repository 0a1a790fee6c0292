"""Sidecars on a Redis Cluster and behind Sentinel, end to end (issue 21).

Real sidecar processes started by the real CLI, a real upstream and callback
receiver in this process, a private 3-node Redis Cluster (no replicas) and a
private Sentinel set-up (one primary, one replica, one Sentinel), each on
free loopback ports and started once for this module. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.test_jobs import (
    CRASH_JOBS,
    SLOW,
    NewCli,
    assert_at_least_once_with_one_key,
    job_headers,
    new_cli,  # noqa: F401  (a fixture)
    receiver,  # noqa: F401  (a fixture)
    secret_of,
    sigkill,
    start,
    submit_many,
    until,
)
from tests.e2e.test_keys import create_key
from tests.support.redis import LocalCluster, LocalSentinel, StartOnce, started_once
from tests.support.upstream import Upstream, reply, start_upstream
from tests.support.webhooks import Receiver, verify

#: Jobs lease for 2 s here: a killed sidecar's jobs come due again quickly.
SHORT_LEASE = 'job_lease = "2s"\n'


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartOnce[LocalCluster]]:
    with started_once(LocalCluster(tmp_path_factory.mktemp("e2e-cluster"))) as made:
        yield made


@pytest.fixture
def cluster_url(cluster: StartOnce[LocalCluster]) -> str:
    """The module's cluster, whole and emptied for this test."""
    started = cluster.get()
    for node in started.nodes:
        if node.process is None:
            node.start()
    started.wait_ok(30)
    started.flush()
    return started.url


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartOnce[LocalSentinel]]:
    with started_once(LocalSentinel(tmp_path_factory.mktemp("e2e-sentinel"))) as made:
        yield made


async def test_two_sidecars_on_a_cluster_share_routes_breaker_idempotency_and_keys(
    new_cli: NewCli,  # noqa: F811
    cluster_url: str,
    upstream: Upstream,
    http: httpx.AsyncClient,
) -> None:
    first_cli, second_cli, admin = new_cli(), new_cli(), new_cli()
    first = start(first_cli, "--redis", cluster_url)
    second = start(second_cli, "--redis", cluster_url)

    # Routes: added through the CLI on the cluster, used by the other sidecar.
    added = await asyncio.to_thread(
        admin, "routes", "add", "shared", "--endpoint", upstream.url, "--redis", cluster_url
    )
    assert added.returncode == 0, added.stderr
    routed = await _until_answer(http, second + "/r/shared/ping", lambda a: a.status_code != 404)
    assert routed.status_code == 200 and upstream.seen[-1].path_qs == "/ping"

    # Breaker: opened through the first, failing fast through the second.
    breaker = {
        "X-Target-URL": upstream.url + "/b",
        "X-Circuit-Breaker": "on; threshold=2; cooldown=30s",
    }
    upstream.then(reply(500), reply(500))
    await http.get(first, headers=breaker)
    await http.get(first, headers=breaker)
    seen = len(upstream.seen)
    fast = await http.get(second, headers=breaker)
    assert fast.json()["error"]["code"] == "circuit_open"
    assert len(upstream.seen) == seen

    # Single flight: 6 concurrent duplicates, 3 through each, make 1 upstream call.
    seen = len(upstream.seen)
    upstream.default = reply(201, b'{"charge": "ch_1"}', delay=0.5)
    charge = {"X-Target-URL": upstream.url + "/charges"}
    answers = await asyncio.gather(
        *(
            http.post(sidecar, headers=charge, content=b"amount=100")
            for sidecar in [first, second] * 3
        )
    )
    assert [a.status_code for a in answers] == [201] * 6
    assert {a.content for a in answers} == {b'{"charge": "ch_1"}'}
    assert len(upstream.seen) == seen + 1

    # Keys: one made through the cluster is enforced by both sidecars.
    key = await create_key(admin, "--redis", cluster_url)
    plain = {"X-Target-URL": upstream.url + "/k"}
    upstream.default = reply(200, b"{}")
    for sidecar in (first, second):
        refused = await _until_answer(http, sidecar, lambda a: a.status_code == 401, plain)
        assert refused.json()["error"]["code"] == "unauthorized"
        keyed = await http.get(sidecar, headers={**plain, "X-MirApi-Key": key})
        assert keyed.status_code == 200


async def test_a_cluster_sidecars_peer_delivers_the_jobs_of_a_killed_one(
    new_cli: NewCli,  # noqa: F811
    cluster_url: str,
    upstream: Upstream,
    receiver: Receiver,  # noqa: F811
    http: httpx.AsyncClient,
) -> None:
    first_cli, second_cli = new_cli(SHORT_LEASE), new_cli(SHORT_LEASE)
    first = start(first_cli, "--redis", cluster_url)
    start(second_cli, "--redis", cluster_url)
    upstream.default = reply(200, b'{"slow": true}', delay=SLOW)
    accepted = await submit_many(http, first, job_headers(upstream, receiver))

    await until(lambda: len(upstream.seen) >= 5, within=10)
    sigkill(first_cli)

    called_back = await receiver.wait_for_jobs(CRASH_JOBS, within=40)
    assert called_back == set(accepted)
    assert_at_least_once_with_one_key(upstream, accepted)
    secret = await asyncio.to_thread(secret_of, second_cli, "--redis", cluster_url)
    for delivery in receiver.deliveries:
        verify(secret, delivery.headers, delivery.body)


async def test_a_stopped_cluster_node_degrades_readiness_not_forwards(
    new_cli: NewCli,  # noqa: F811
    cluster_url: str,
    cluster: StartOnce[LocalCluster],
    upstream: Upstream,
    http: httpx.AsyncClient,
) -> None:
    sidecar = start(new_cli(), "--redis", cluster_url)
    ready = sidecar + "/_mirapi/readyz"
    headers = {
        "X-Target-URL": upstream.url + "/x",
        "X-Smart-Cache": "5m",
        "X-Circuit-Breaker": "on",
    }
    assert (await http.get(ready)).status_code == 200
    node = cluster.get().nodes[1]

    node.stop()
    try:
        deadline = time.monotonic() + 20
        while True:
            for _ in range(3):
                assert (await http.get(sidecar, headers=headers)).status_code == 200
                posted = await http.post(sidecar, headers=headers, content=b"a=1")
                assert posted.status_code == 200
            state = await http.get(ready)
            if state.status_code == 503:
                break
            assert time.monotonic() < deadline, "readyz never said degraded"
            await asyncio.sleep(0.2)
        assert state.json()["status"] == "degraded" and "redis" in state.json()["reason"]
    finally:
        node.start()

    back = time.monotonic()
    while (await http.get(ready)).status_code != 200:
        assert time.monotonic() - back < 30, "not ready again within 30 s of the node's return"
        assert (await http.get(sidecar, headers=headers)).status_code == 200
        await asyncio.sleep(0.2)


async def test_a_sentinel_failover_under_load_loses_no_job_and_no_forward(
    new_cli: NewCli,  # noqa: F811
    sentinel: StartOnce[LocalSentinel],
    upstream: Upstream,
    receiver: Receiver,  # noqa: F811
    http: httpx.AsyncClient,
) -> None:
    setup = sentinel.get()
    sidecars = [start(new_cli(SHORT_LEASE), "--redis", setup.url) for _ in range(2)]
    upstream.default = reply(200, b"{}")
    plain = {"X-Target-URL": upstream.url + "/plain", "X-Circuit-Breaker": "on"}
    # A slow upstream for the jobs: many are still queued or running at the kill.
    job_upstream, job_runner = await start_upstream()
    job_upstream.default = reply(200, b'{"slow": true}', delay=SLOW)
    load = _Load(http, sidecars, plain, job_headers(job_upstream, receiver))
    running = asyncio.create_task(load.run())
    try:
        await until(lambda: len(load.accepted) >= 10, within=10)
        setup.kill_primary()
        at_kill, done_at_kill = len(load.accepted), len(receiver.job_ids())
        await asyncio.to_thread(setup.wait_promoted, 30)
        for sidecar in sidecars:
            await _until_answer(http, sidecar + "/_mirapi/readyz", lambda a: a.status_code == 200)
        # Jobs are accepted by the new primary too; then the load stops.
        await until(lambda: len(load.accepted) >= at_kill + 5, within=10)
        load.stop.set()
        await running

        assert load.forwarded and set(load.forwarded) == {200}, sorted(set(load.forwarded))
        assert done_at_kill < at_kill, "every job was done before the kill: nothing to lose"
        called_back = await receiver.wait_for_jobs(len(load.accepted), within=30)
        assert set(load.accepted) <= called_back
    finally:
        load.stop.set()
        await asyncio.gather(running, return_exceptions=True)
        await job_runner.cleanup()
        await asyncio.to_thread(setup.heal)


class _Load:
    """Plain forwards and job submissions, round robin over the sidecars, until `stop`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        sidecars: list[str],
        plain: dict[str, str],
        jobs: dict[str, str],
    ) -> None:
        self.http, self.sidecars, self.plain, self.jobs = http, sidecars, plain, jobs
        self.stop = asyncio.Event()
        self.forwarded: list[int] = []
        self.accepted: list[str] = []
        self.refused_jobs = 0

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            sidecar = self.sidecars[n % len(self.sidecars)]
            answer = await self.http.get(sidecar, headers=self.plain)
            self.forwarded.append(answer.status_code)
            submitted = await self.http.post(sidecar, headers=self.jobs, content=f"n={n}".encode())
            if submitted.status_code == 202:
                self.accepted.append(submitted.json()["job_id"])
            else:
                # Not accepted (the store was between primaries): said so, never lost.
                assert submitted.status_code == 503, submitted.text
                self.refused_jobs += 1
            n += 1
            await asyncio.sleep(0.02)


async def _until_answer(
    http: httpx.AsyncClient,
    url: str,
    done: Callable[[httpx.Response], bool],
    headers: dict[str, str] | None = None,
    within: float = 10.0,
) -> httpx.Response:
    """GET `url` until `done(answer)`; fails after `within` s."""
    began = time.monotonic()
    while True:
        answer = await http.get(url, headers=headers)
        if done(answer):
            return answer
        assert time.monotonic() - began < within, f"{url}: still {answer.status_code}"
        await asyncio.sleep(0.05)
