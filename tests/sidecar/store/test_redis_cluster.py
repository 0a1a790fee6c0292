"""Redis past one server: the URL schemes, a Redis Cluster and a Sentinel failover (issue 21).

The whole contract suite also runs on the cluster (the `cluster` backend in
conftest.py): there, any operation whose keys are not in one hash slot
fails. These tests pin what only a cluster or Sentinel does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.exceptions import RedisClusterException

from sidecar.config import ConfigError, load
from sidecar.errors import StoreUnavailable
from sidecar.redis_url import Endpoints, parse_url
from sidecar.store.redis import RedisStore
from sidecar.store.redis.jobs import REPLICA_WAIT_MS
from tests.sidecar.store.test_jobs_contract import make_job
from tests.support.clock import FakeClock
from tests.support.redis import (
    LocalCluster,
    LocalSentinel,
    StartOnce,
    command,
    info_field,
    started_once,
)

# -- URLs ----------------------------------------------------------------------------


def test_a_cluster_url_names_every_seed_with_default_ports() -> None:
    parsed = parse_url("redis+cluster://10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert parsed.topology == "cluster"
    assert parsed.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert not parsed.tls
    assert parse_url("rediss+cluster://h:1").tls


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_credentials() -> None:
    parsed = parse_url("redis+sentinel://app:p%40ss@s1,s2:26380/orders/2")
    assert parsed == Endpoints(
        "sentinel",
        nodes=(("s1", 26379), ("s2", 26380)),
        service="orders",
        db=2,
        username="app",
        password="p@ss",
    )
    assert "p@ss" not in repr(parsed)


def test_a_single_server_url_is_left_to_redis_py() -> None:
    for url in ("redis://h:1/0", "rediss://h", "unix:///run/redis.sock"):
        assert parse_url(url) == Endpoints("server", url=url)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",
        "redis+cluster://h:notaport",
        "redis+cluster://h:70000",
        "redis+cluster://h:1/3",  # a cluster has database 0 only
        "redis+cluster://h:1?timeout=secret",
        "redis+sentinel://s:26379",  # no service
        "redis+sentinel://s:26379/svc/x",
        "redis+sentinel://[::1/svc",
        "memcached://secret@h",
    ],
)
def test_a_bad_url_is_refused_without_quoting_it(url: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_url(url)
    assert "secret" not in str(refused.value) and url not in str(refused.value)


def test_the_settings_take_the_cluster_and_sentinel_schemes() -> None:
    for url in ("redis+cluster://127.0.0.1:7000", "rediss+cluster://h", "redis+sentinel://s/svc"):
        assert load(None, {"MIRAPI_REDIS": url}, {}).redis == url
    # A cluster or Sentinel URL is checked whole when read, not when first used.
    with pytest.raises(ConfigError) as refused:
        load(None, {"MIRAPI_REDIS": "redis+sentinel://:hunter2@s:26379"}, {})
    assert "hunter2" not in str(refused.value)


# -- the cluster ----------------------------------------------------------------------


@pytest.fixture
async def cluster_store(redis_cluster_url: str, fake: FakeClock) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_cluster_url, fake.clock())
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_script_over_keys_of_two_slots_is_refused_not_run(
    cluster_store: RedisStore,
) -> None:
    # What the contract suite relies on: a key layout that crosses slots fails.
    script = cluster_store._client.register_script("return redis.call('SET', KEYS[2], '1')")
    with pytest.raises(RedisClusterException):
        await script(keys=["mirapi:cache:{a}", "mirapi:cache:{b}"])


async def test_the_stores_keys_are_spread_over_the_nodes(
    cluster_store: RedisStore, redis_cluster: StartOnce[LocalCluster]
) -> None:
    # Else the contract suite on the cluster would prove nothing about slots.
    for n in range(30):
        await cluster_store.record_put("routes", f"r{n}", b"{}", replace=True)
        await cluster_store.breaker_status(f"host{n}.example")
        await cluster_store.idem_claim(f"key-{n}", "fp", "token", 30.0)
    cluster = redis_cluster.get()
    holding = [node.port for node in cluster.nodes if int(str(command(node.port, "DBSIZE"))) > 0]
    assert len(holding) >= 2


async def test_a_notice_through_one_seed_reaches_a_listener_through_another(
    redis_cluster_url: str, redis_cluster: StartOnce[LocalCluster], fake: FakeClock
) -> None:
    first, last = redis_cluster.get().nodes[0], redis_cluster.get().nodes[-1]
    listener = RedisStore(f"redis+cluster://127.0.0.1:{first.port}", fake.clock())
    notifier = RedisStore(f"redis+cluster://127.0.0.1:{last.port}", fake.clock())
    heard: list[str] = []
    listening = asyncio.create_task(listener.fleet_listen(heard.append))
    try:
        deadline = time.monotonic() + 5
        while await notifier.fleet_notify("routes") == 0:
            assert time.monotonic() < deadline, "the listener never subscribed"
            await asyncio.sleep(0.05)
        while "routes" not in heard:
            assert time.monotonic() < deadline, "the notice did not arrive"
            await asyncio.sleep(0.02)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await listener.close()
        await notifier.close()


# -- Sentinel -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentinel_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartOnce[LocalSentinel]]:
    with started_once(LocalSentinel(tmp_path_factory.mktemp("sentinel"))) as setup:
        yield setup


def _until_replica_caught_up(setup: LocalSentinel, within: float = 15.0) -> None:
    """Until the replica has applied every write the primary had made."""
    assert setup.replica is not None
    primary = setup.primary_port()
    assert primary is not None
    wanted = info_field(command(primary, "INFO", "replication"), "master_repl_offset")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = info_field(command(setup.replica.port, "INFO", "replication"), "slave_repl_offset")
        if got is not None and wanted is not None and int(got) >= int(wanted):
            return
        time.sleep(0.05)
    raise AssertionError("the replica did not catch up with its primary")


async def test_a_job_accepted_before_a_failover_is_there_after_it(
    sentinel_setup: StartOnce[LocalSentinel], fake: FakeClock
) -> None:
    setup = sentinel_setup.get()
    store = RedisStore(setup.url, fake.clock())
    await store.open()
    try:
        job = make_job("job-before-failover", fake)
        await store.job_add(job)
        # job_add waits up to 500 ms for the replica's copy (the next test
        # shows it); on a machine busy with a parallel suite the copy can
        # take longer. This test is about the failover, so the copy is made
        # sure of first: once the replica has it, the promotion must keep it.
        await asyncio.to_thread(_until_replica_caught_up, setup)
        setup.kill_primary()

        # No primary yet: a call fails at once (StoreUnavailable), it does not hang.
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.job_get(job.id)
        assert time.monotonic() - started < 5

        await asyncio.to_thread(setup.wait_promoted, 30)
        deadline = time.monotonic() + 10
        while True:
            try:
                kept = await store.job_get(job.id)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not find the new primary"
                await asyncio.sleep(0.1)
        assert kept is not None and kept.id == job.id and kept == job
        assert store.health().ok
    finally:
        await store.close()
        await asyncio.to_thread(setup.heal)


async def test_behind_sentinel_accepting_a_job_waits_for_the_replica_but_not_long(
    sentinel_setup: StartOnce[LocalSentinel], fake: FakeClock
) -> None:
    setup = sentinel_setup.get()
    assert setup.replica is not None
    replica = setup.replica.port
    store = RedisStore(setup.url, fake.clock())
    await store.open()
    try:
        # The replica stops reading for 2 s: the job's copy reaches it only then.
        lagging = asyncio.create_task(
            asyncio.to_thread(command, replica, "DEBUG", "SLEEP", "2", timeout=5)
        )
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await store.job_add(make_job("job-waits", fake))
        took = time.monotonic() - started
        await lagging
        assert took >= REPLICA_WAIT_MS / 1000 * 0.8, "the job was reported added at once"
        assert took < 1.5, "a lagging replica held the job's acceptance past the bound"
    finally:
        await store.close()


# -- the test set-ups themselves ------------------------------------------------------


class _Unstartable:
    def start(self) -> None:
        raise RuntimeError("port taken")

    def stop(self) -> None:
        pass


def test_a_set_up_that_cannot_start_fails_once_then_skips() -> None:
    once = StartOnce(_Unstartable())
    with pytest.raises(pytest.fail.Exception, match="port taken"):
        once.get()
    with pytest.raises(pytest.skip.Exception, match="see the first failure"):
        once.get()
