"""Stored jobs, the same on every backend (conftest `store`, on a FakeClock).

A job is kept whole (binary bodies too); a claim is a lease on the job due
earliest, which no other claimer gets while it runs and anyone gets once it
ran out; only the lease holder renews or saves (the CLI saves without one);
listing is newest first; the depth counts jobs with work left; finished jobs
are purged; the webhook secret is created once. Two stores on one file or
server never claim the same job; the embedded store makes a dead process's
jobs due at once when it opens again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sidecar.errors import StoreUnavailable
from sidecar.jobs.model import (
    CANCELLED,
    FAILED,
    QUEUED,
    SUCCEEDED,
    Job,
    JobOutcome,
    JobRequest,
)
from sidecar.store.base import Store
from sidecar.store.embedded import EmbeddedStore
from sidecar.store.memory import MemoryStore
from tests.sidecar.store.conftest import SHARED_BACKENDS
from tests.support.clock import FakeClock

#: Opaque bytes: a NUL and invalid UTF-8 must survive.
BINARY = b'{"amount":1}\x00\xff\xfe\n'
LEASE = 60.0


def make_job(job_id: str, fake: FakeClock, **changes: object) -> Job:
    """A queued job due now, created now (unless `changes` say otherwise)."""
    job = Job(
        id=job_id,
        request=JobRequest(
            method="POST",
            path="/v1/charges",
            query="a=1",
            headers=(("content-type", "application/octet-stream"), ("x-mirapi-route", "pay")),
            body=BINARY,
        ),
        callback_url="https://hooks.example.com/done",
        created_at=fake.t,
        retry_until=fake.t + 86400,
        idempotency_key=f"idem-{job_id}",
        due_at=fake.t,
    )
    return job.with_(**changes)


async def add_jobs(store: Store, fake: FakeClock, count: int) -> list[str]:
    ids = [f"job-{n:02d}" for n in range(count)]
    for job_id in ids:
        await store.job_add(make_job(job_id, fake))
    return ids


# -- storing ---------------------------------------------------------------------


async def test_an_added_job_is_read_back_whole(store: Store, fake: FakeClock) -> None:
    job = make_job(
        "job-1",
        fake,
        attempts=2,
        last_error="upstream answered 503",
        outcome=JobOutcome(502, (("content-type", "image/png"),), b"\x89PNG\x00\xff"),
    )
    await store.job_add(job)

    assert await store.job_get("job-1") == job
    assert await store.job_get("missing") is None


# -- claiming ----------------------------------------------------------------------


async def test_the_job_due_earliest_is_claimed_first(store: Store, fake: FakeClock) -> None:
    await store.job_add(make_job("later", fake, due_at=fake.t - 1))
    await store.job_add(make_job("earlier", fake, due_at=fake.t - 10))
    await store.job_add(make_job("future", fake, due_at=fake.t + 30))

    first = await store.job_claim("w1", LEASE)
    second = await store.job_claim("w1", LEASE)

    assert first is not None and first.id == "earlier"
    assert second is not None and second.id == "later"
    assert await store.job_claim("w1", LEASE) is None  # "future" is not due yet
    fake.advance(30)
    third = await store.job_claim("w1", LEASE)
    assert third is not None and third.id == "future"


async def test_nothing_due_claims_nothing(store: Store, fake: FakeClock) -> None:
    assert await store.job_claim("w1", LEASE) is None
    await store.job_add(make_job("done", fake, due_at=None, status=SUCCEEDED, delivered=True))

    fake.advance(10 * 86400)

    assert await store.job_claim("w1", LEASE) is None


async def test_a_claim_is_a_lease_another_owner_gets_once_it_ran_out(
    store: Store, fake: FakeClock
) -> None:
    await store.job_add(make_job("job-1", fake))

    claimed = await store.job_claim("w1", LEASE)

    assert claimed is not None
    assert (claimed.owner, claimed.due_at) == ("w1", fake.t + LEASE)
    assert claimed.request.body == BINARY
    stored = await store.job_get("job-1")
    assert stored is not None and (stored.owner, stored.due_at) == ("w1", fake.t + LEASE)
    fake.advance(LEASE - 1)
    assert await store.job_claim("w2", LEASE) is None

    fake.advance(1)  # the lease ran out: w1 died, say
    taken = await store.job_claim("w2", LEASE)

    assert taken is not None and taken.id == "job-1"
    assert (taken.owner, taken.due_at) == ("w2", fake.t + LEASE)
    assert not await store.job_renew("job-1", "w1", LEASE)
    assert not await store.job_save(taken.with_(status=FAILED), "w1")


async def test_only_the_owner_renews_its_lease(store: Store, fake: FakeClock) -> None:
    await store.job_add(make_job("job-1", fake))
    await store.job_claim("w1", LEASE)
    fake.advance(50)

    assert not await store.job_renew("job-1", "w2", LEASE)
    assert not await store.job_renew("missing", "w1", LEASE)
    assert await store.job_renew("job-1", "w1", LEASE)

    fake.advance(50)  # past the first lease, within the renewed one
    assert await store.job_claim("w2", LEASE) is None
    stored = await store.job_get("job-1")
    assert stored is not None and stored.due_at == fake.t - 50 + LEASE
    fake.advance(10)
    assert await store.job_claim("w2", LEASE) is not None


# -- saving ------------------------------------------------------------------------


async def test_the_owner_saves_the_next_attempt_and_lets_go(store: Store, fake: FakeClock) -> None:
    await store.job_add(make_job("job-1", fake))
    claimed = await store.job_claim("w1", LEASE)
    assert claimed is not None

    retry = claimed.with_(attempts=1, last_error="timeout", due_at=fake.t + 5)
    assert await store.job_save(retry, "w1")

    stored = await store.job_get("job-1")
    assert stored == retry.with_(owner=None)
    assert await store.job_claim("w2", LEASE) is None
    fake.advance(5)
    again = await store.job_claim("w2", LEASE)
    assert again is not None and again.attempts == 1 and again.owner == "w2"


async def test_a_save_by_a_stale_owner_writes_nothing(store: Store, fake: FakeClock) -> None:
    await store.job_add(make_job("job-1", fake))
    claimed = await store.job_claim("w1", LEASE)
    assert claimed is not None

    stale = claimed.with_(status=SUCCEEDED, attempts=1, due_at=fake.t)
    assert not await store.job_save(stale, "w2")
    assert not await store.job_save(stale.with_(id="missing"), "w1")

    stored = await store.job_get("job-1")
    assert stored is not None
    assert (stored.status, stored.attempts, stored.owner) == (QUEUED, 0, "w1")
    assert await store.job_get("missing") is None


async def test_a_save_without_owner_overrides_the_lease(store: Store, fake: FakeClock) -> None:
    await store.job_add(make_job("job-1", fake))
    claimed = await store.job_claim("w1", LEASE)
    assert claimed is not None

    cancelled = claimed.with_(status=CANCELLED, due_at=None, finished_at=fake.t)
    assert await store.job_save(cancelled, None)

    stored = await store.job_get("job-1")
    assert stored == cancelled.with_(owner=None)
    assert not await store.job_save(claimed.with_(attempts=1), "w1")  # the worker lost it
    fake.advance(10 * LEASE)
    assert await store.job_claim("w2", LEASE) is None  # never due again


# -- listing, depth, purge -----------------------------------------------------------


async def test_jobs_are_listed_newest_first_and_by_status(store: Store, fake: FakeClock) -> None:
    for n, status in enumerate((QUEUED, SUCCEEDED, QUEUED, FAILED)):
        await store.job_add(make_job(f"job-{n}", fake, status=status))
        fake.advance(1)
    # A status change moves the job to its new status's list.
    job_0 = await store.job_get("job-0")
    assert job_0 is not None
    await store.job_save(job_0.with_(status=SUCCEEDED), None)

    assert [job.id for job in await store.job_list()] == ["job-3", "job-2", "job-1", "job-0"]
    assert [job.id for job in await store.job_list(limit=2)] == ["job-3", "job-2"]
    assert [job.id for job in await store.job_list(QUEUED)] == ["job-2"]
    assert [job.id for job in await store.job_list(SUCCEEDED)] == ["job-1", "job-0"]
    assert await store.job_list(CANCELLED) == []
    claimed = await store.job_claim("w1", LEASE)
    assert claimed is not None
    listed = {job.id: job for job in await store.job_list()}
    assert listed[claimed.id].owner == "w1"


async def test_depth_counts_jobs_with_work_left(store: Store, fake: FakeClock) -> None:
    assert await store.job_depth() == 0
    await store.job_add(make_job("queued", fake))
    await store.job_add(make_job("to-deliver", fake, status=SUCCEEDED))
    await store.job_add(make_job("delivered", fake, status=SUCCEEDED, delivered=True, due_at=None))
    await store.job_add(make_job("gave-up", fake, status=FAILED, delivery_failed=True))
    await store.job_add(make_job("cancelled", fake, status=CANCELLED, due_at=None))
    assert await store.job_depth() == 2

    queued = await store.job_get("queued")
    assert queued is not None
    await store.job_save(queued.with_(status=CANCELLED, due_at=None), None)
    assert await store.job_depth() == 1


async def test_purge_removes_only_jobs_finished_before_the_time(
    store: Store, fake: FakeClock
) -> None:
    t = fake.t
    done = {"status": SUCCEEDED, "delivered": True, "due_at": None}
    await store.job_add(make_job("old-delivered", fake, finished_at=t - 100, **done))
    await store.job_add(
        make_job("old-cancelled", fake, status=CANCELLED, due_at=None, finished_at=t - 50)
    )
    await store.job_add(make_job("recent", fake, finished_at=t, **done))
    # Finished long ago, but its callback is still owed: kept.
    await store.job_add(make_job("to-deliver", fake, status=SUCCEEDED, finished_at=t - 100))
    await store.job_add(make_job("queued", fake))

    assert await store.job_purge(t) == 2

    assert {job.id for job in await store.job_list()} == {"recent", "to-deliver", "queued"}
    assert await store.job_get("old-delivered") is None
    assert await store.job_list(CANCELLED) == []
    assert await store.job_depth() == 2
    assert await store.job_purge(t) == 0


async def test_the_webhook_secret_is_created_once(store: Store) -> None:
    first = await store.webhook_secret("whsec_first")
    second = await store.webhook_secret("whsec_second")

    assert first == second == "whsec_first"


# -- two claimers on one backend ------------------------------------------------------


@pytest.mark.parametrize("store", SHARED_BACKENDS, indirect=True)
async def test_another_store_never_claims_a_leased_job(
    store: Store, other: Store, fake: FakeClock
) -> None:
    await store.job_add(make_job("job-1", fake))

    claimed = await store.job_claim("a", LEASE)

    assert claimed is not None
    assert await other.job_claim("b", LEASE) is None
    seen = await other.job_get("job-1")
    assert seen is not None and seen.owner == "a"
    fake.advance(LEASE)
    taken = await other.job_claim("b", LEASE)
    assert taken is not None and taken.owner == "b"
    assert not await store.job_save(claimed.with_(status=SUCCEEDED), "a")


@pytest.mark.parametrize("store", SHARED_BACKENDS, indirect=True)
async def test_concurrent_claimers_take_each_job_exactly_once(
    store: Store, other: Store, fake: FakeClock
) -> None:
    ids = await add_jobs(store, fake, 20)

    async def claim_all(backend: Store, owner: str) -> list[str]:
        taken = []
        # Bounded: a claim that does not lease would hand out jobs forever.
        for _ in range(len(ids) + 1):
            job = await backend.job_claim(owner, LEASE)
            if job is None:
                break
            taken.append(job.id)
        return taken

    claims = await asyncio.gather(
        *(claim_all(backend, f"w{n}") for n in range(3) for backend in (store, other))
    )

    every = [job_id for taken in claims for job_id in taken]
    assert sorted(every) == ids


# -- embedded: restart ---------------------------------------------------------------


async def test_embedded_jobs_survive_a_reopen(tmp_path: Path, fake: FakeClock) -> None:
    path = tmp_path / "jobs.db"
    first = EmbeddedStore(path, fake.clock())
    await first.open()
    job = make_job("job-1", fake)
    await first.job_add(job)
    await first.job_add(make_job("done", fake, status=CANCELLED, due_at=None, finished_at=fake.t))
    secret = await first.webhook_secret("whsec_a")
    await first.close()

    second = EmbeddedStore(path, fake.clock())
    await second.open()
    try:
        assert await second.job_get("job-1") == job
        assert await second.job_depth() == 1
        assert await second.webhook_secret("whsec_b") == secret
    finally:
        await second.close()


async def test_embedded_a_job_leased_at_close_is_due_at_once_after_reopen(
    tmp_path: Path, fake: FakeClock
) -> None:
    path = tmp_path / "jobs.db"
    first = EmbeddedStore(path, fake.clock())
    await first.open()
    await first.job_add(make_job("job-1", fake))
    assert await first.job_claim("dead-worker", LEASE) is not None
    await first.close()  # the process "died" holding the lease

    second = EmbeddedStore(path, fake.clock())
    await second.open()
    try:
        stored = await second.job_get("job-1")
        assert stored is not None and (stored.owner, stored.due_at) == (None, fake.t)
        taken = await second.job_claim("new-worker", LEASE)  # no waiting for the lease
        assert taken is not None and taken.id == "job-1"
    finally:
        await second.close()


async def test_embedded_a_second_store_leaves_a_running_sidecars_leases(
    tmp_path: Path, fake: FakeClock
) -> None:
    path = tmp_path / "jobs.db"
    sidecar = EmbeddedStore(path, fake.clock())
    await sidecar.open()
    try:
        await sidecar.job_add(make_job("job-1", fake))
        assert await sidecar.job_claim("worker", LEASE) is not None

        cli = EmbeddedStore(path, fake.clock())  # `mirapi jobs list`, say
        await cli.open()
        try:
            assert await cli.job_claim("other", LEASE) is None
            assert await sidecar.job_renew("job-1", "worker", LEASE)
        finally:
            await cli.close()
    finally:
        await sidecar.close()


# -- memory-only and fallback -----------------------------------------------------------


async def test_a_memory_only_embedded_store_keeps_jobs_in_memory(fake: FakeClock) -> None:
    store = EmbeddedStore(None, fake.clock())
    await store.open()
    try:
        await store.job_add(make_job("job-1", fake))
        claimed = await store.job_claim("w1", LEASE)
        assert claimed is not None and claimed.id == "job-1"
        assert await store.job_depth() == 1
    finally:
        await store.close()


async def test_a_degraded_resilient_store_refuses_jobs(tmp_path: Path, fake: FakeClock) -> None:
    from sidecar.store.redis import RedisStore
    from sidecar.store.resilient import ResilientStore

    unreachable = RedisStore(f"unix://{tmp_path / 'no-redis.sock'}", fake.clock())
    local = MemoryStore(fake.clock())
    store = ResilientStore(unreachable, local, fake.clock(), retry_interval=60)
    await store.open()
    try:
        assert store.degraded
        with pytest.raises(StoreUnavailable):
            await store.job_add(make_job("job-1", fake))
        with pytest.raises(StoreUnavailable):
            await store.job_depth()
        with pytest.raises(StoreUnavailable):
            await store.job_claim("w1", LEASE)
        with pytest.raises(StoreUnavailable):
            await store.webhook_secret("whsec_x")
        assert await local.job_get("job-1") is None  # never accepted locally
    finally:
        await store.close()
