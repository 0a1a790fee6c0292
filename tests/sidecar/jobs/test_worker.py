"""Job workers end to end in-process: a real upstream, a real callback receiver.

Jobs are submitted through the real chain (AsyncJobs), run by real
JobWorkers over a memory store whose due times follow a FakeClock: a test
moves time forward and wakes the workers instead of waiting for a retry.
Signatures are checked with the small HMAC code below, written from the
Standard Webhooks spec, not with the sidecar's own signing code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest

from sidecar.exchange import Exchange
from sidecar.jobs.model import CANCELLED, FAILED, QUEUED, SUCCEEDED, Job, JobRequest
from sidecar.jobs.webhooks import CallbackSender
from sidecar.jobs.worker import JobWorkers
from sidecar.outbound.upstream import UpstreamClient
from sidecar.pipeline import Parts, build_chain, build_job_chain
from sidecar.policy import parse_policy
from sidecar.security.egress import EgressPolicy
from sidecar.stages.async_jobs import AsyncJobs
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock
from tests.support.upstream import Seen, Upstream, reply, start_upstream

PATIENCE = 3.0


def verify_signature(secret: str, seen: Seen) -> None:
    """Standard Webhooks: v1 = base64(HMAC-SHA256(key, id.timestamp.body))."""
    key = base64.b64decode(secret.split("_", 1)[1])
    msg_id = seen.headers["webhook-id"]
    timestamp = seen.headers["webhook-timestamp"]
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + seen.body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    offered = [entry.split(",", 1)[1] for entry in seen.headers["webhook-signature"].split(" ")]
    assert any(hmac.compare_digest(expected, sig) for sig in offered), "signature mismatch"


@pytest.fixture
async def receiver() -> AsyncIterator[Upstream]:
    """A callback receiver on 127.0.0.1 (answers 200 unless scripted)."""
    server, runner = await start_upstream()
    try:
        yield server
    finally:
        await runner.cleanup()


class Harness:
    """A submit chain and workers over one memory store and a fake clock."""

    def __init__(self, *, workers: int = 2, lease: float = 60.0) -> None:
        self.fake = FakeClock()
        clock = self.fake.clock()
        self.store = MemoryStore(clock)
        egress = EgressPolicy(allow_private=True)
        self.client = UpstreamClient(egress)
        limit = 1024 * 1024
        parts = Parts(store=self.store, max_body=limit, cache_entry_limit=limit, clock=clock)
        run = build_job_chain(self.client, parts)
        self.sender = CallbackSender(self.store, self.client, clock)
        self.workers = JobWorkers(
            self.store, run, self.sender, clock, workers=workers, lease=lease, poll=0.02
        )
        self.submit_chain = build_chain(
            self.client,
            replace(parts, jobs=AsyncJobs(self.store, clock, egress, wake=self.workers.wake)),
        )

    async def submit(self, headers: dict[str, str], method: str = "POST") -> str:
        lowered = [(name.lower(), value) for name, value in headers.items()]
        policy = parse_policy(dict(lowered))
        exchange = Exchange(method, "/v1/charges", "", lowered, b"amount=100", policy, "rid")
        response = await self.submit_chain(exchange)
        assert response.status == 202
        return str(orjson.loads(response.body)["job_id"])

    async def job(self, job_id: str) -> Job:
        job = await self.store.job_get(job_id)
        assert job is not None
        return job

    async def until(self, job_id: str, check: Callable[[Job], bool]) -> Job:
        """The job once `check` holds (fails after PATIENCE seconds)."""
        async with asyncio.timeout(PATIENCE):
            while True:
                job = await self.job(job_id)
                if check(job):
                    return job
                await asyncio.sleep(0.01)

    def later(self, seconds: float) -> None:
        """Move time on and wake the workers, as a due retry would."""
        self.fake.advance(seconds)
        self.workers.wake()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    made = Harness()
    made.workers.start()
    try:
        yield made
    finally:
        await made.workers.stop()
        await made.client.aclose()


def headers_for(upstream: Upstream, receiver: Upstream, **extra: str) -> dict[str, str]:
    return {
        "X-Target-URL": upstream.url,
        "X-Webhook-Callback": f"{receiver.url}/hook",
        **extra,
    }


def delivered(job: Job) -> bool:
    return job.delivered


async def test_retries_a_503_then_succeeds_and_calls_back_signed(
    harness: Harness, upstream: Upstream, receiver: Upstream
) -> None:
    upstream.then(reply(503, b"busy"))
    job_id = await harness.submit(headers_for(upstream, receiver))
    waiting = await harness.until(job_id, lambda j: j.attempts == 1)
    assert waiting.status == QUEUED
    assert waiting.last_error == "upstream answered 503"
    assert waiting.due_at is not None and waiting.due_at > harness.fake.t  # stored, not held
    assert receiver.seen == []
    harness.later(3600)
    job = await harness.until(job_id, delivered)
    assert job.status == SUCCEEDED and job.attempts == 2
    assert len(receiver.seen) == 1
    callback = receiver.seen[0]
    assert callback.method == "POST" and callback.path_qs == "/hook"
    verify_signature(await harness.sender.secret(), callback)
    assert callback.headers["webhook-id"] == f"{job_id}.2"  # two runs
    body = orjson.loads(callback.body)
    assert body["job_id"] == job_id
    assert body["status"] == "succeeded"
    assert body["attempts"] == 2
    assert body["response"]["status"] == 200
    assert body["response"]["body"] == '{"ok":true}'
    # Every attempt carried the job's Idempotency-Key upstream; no proxy header.
    keys = [seen.headers.get("idempotency-key") for seen in upstream.seen]
    assert keys == [job.idempotency_key, job.idempotency_key]
    assert all("x-webhook-callback" not in seen.headers for seen in upstream.seen)
    assert upstream.seen[1].body == b"amount=100"


async def test_explicit_key_is_sent_upstream(
    harness: Harness, upstream: Upstream, receiver: Upstream
) -> None:
    job_id = await harness.submit(
        headers_for(upstream, receiver, **{"X-Proxy-Idempotency-Key": "order-1"})
    )
    await harness.until(job_id, delivered)
    assert upstream.seen[0].headers["idempotency-key"] == "order-1"


async def test_other_4xx_fails_at_once(
    harness: Harness, upstream: Upstream, receiver: Upstream
) -> None:
    upstream.then(reply(400, b'{"error":"bad"}'))
    job_id = await harness.submit(headers_for(upstream, receiver))
    job = await harness.until(job_id, delivered)
    assert job.status == FAILED and job.attempts == 1
    assert len(upstream.seen) == 1
    body = orjson.loads(receiver.seen[0].body)
    assert body["status"] == "failed"
    assert body["response"]["status"] == 400
    assert body["response"]["body"] == '{"error":"bad"}'


async def test_retries_stop_at_retry_for(
    harness: Harness, upstream: Upstream, receiver: Upstream
) -> None:
    upstream.default = reply(503)
    job_id = await harness.submit(headers_for(upstream, receiver, **{"X-Webhook-Retry-For": "15s"}))
    await harness.until(job_id, lambda j: j.attempts == 1)
    harness.later(12)  # the first retry: 10 s, +-10%
    job = await harness.until(job_id, delivered)
    # The next delay (20 s) would pass the 15 s allowed: failed after two runs.
    assert job.status == FAILED and job.attempts == 2
    assert orjson.loads(receiver.seen[0].body)["attempts"] == 2


async def test_unreachable_upstream_is_retried_as_the_sidecar_answer(
    harness: Harness, receiver: Upstream
) -> None:
    job_id = await harness.submit(
        {"X-Target-URL": "http://127.0.0.1:9", "X-Webhook-Callback": f"{receiver.url}/h"}
    )
    job = await harness.until(job_id, lambda j: j.attempts == 1)
    assert job.status == QUEUED
    assert job.last_error == "upstream_unreachable (502)"


async def test_410_stops_delivery(harness: Harness, upstream: Upstream, receiver: Upstream) -> None:
    receiver.then(reply(410))
    job_id = await harness.submit(headers_for(upstream, receiver))
    job = await harness.until(job_id, lambda j: j.delivery_failed)
    assert not job.delivered and job.due_at is None and job.delivery_attempts == 1
    harness.later(24 * 3600)
    await asyncio.sleep(0.1)
    assert len(receiver.seen) == 1


async def test_failed_delivery_is_retried_with_the_same_webhook_id(
    harness: Harness, upstream: Upstream, receiver: Upstream
) -> None:
    receiver.then(reply(500))
    job_id = await harness.submit(headers_for(upstream, receiver))
    job = await harness.until(job_id, lambda j: j.delivery_attempts == 1)
    assert not job.delivered and job.due_at is not None and job.due_at > harness.fake.t
    assert job.last_error == "callback answered 500"
    harness.later(3600)
    job = await harness.until(job_id, delivered)
    assert job.delivery_attempts == 2
    assert [seen.headers["webhook-id"] for seen in receiver.seen] == [f"{job_id}.1"] * 2
    secret = await harness.sender.secret()
    for seen in receiver.seen:
        verify_signature(secret, seen)
    assert len(upstream.seen) == 1  # delivery retries never run the job again


async def test_lease_is_renewed_during_a_slow_job(upstream: Upstream, receiver: Upstream) -> None:
    harness = Harness(workers=1, lease=0.15)
    upstream.then(reply(delay=0.6))
    harness.workers.start()
    try:
        job_id = await harness.submit(headers_for(upstream, receiver))
        claimed = await harness.until(job_id, lambda j: j.owner is not None)
        assert claimed.due_at is not None
        # Past the first lease: only a renewal keeps the job ours.
        harness.fake.advance(10)
        renewed = await harness.until(
            job_id, lambda j: j.due_at is not None and j.due_at > harness.fake.t
        )
        assert renewed.owner == claimed.owner
        assert await harness.store.job_claim("intruder", 60) is None
        job = await harness.until(job_id, delivered)
        assert job.attempts == 1 and len(upstream.seen) == 1
    finally:
        await harness.workers.stop()
        await harness.client.aclose()


async def test_a_job_cancelled_while_running_is_dropped(
    upstream: Upstream, receiver: Upstream
) -> None:
    harness = Harness(workers=1, lease=0.15)
    upstream.then(reply(delay=0.5))
    harness.workers.start()
    try:
        job_id = await harness.submit(headers_for(upstream, receiver))
        running = await harness.until(job_id, lambda j: j.owner is not None)
        await harness.store.job_save(running.with_(status=CANCELLED, due_at=None), None)
        await asyncio.sleep(0.7)
        job = await harness.job(job_id)
        assert job.status == CANCELLED and job.attempts == 0
        assert receiver.seen == []
    finally:
        await harness.workers.stop()
        await harness.client.aclose()


async def test_stop_leaves_a_running_job_leased(upstream: Upstream, receiver: Upstream) -> None:
    harness = Harness(workers=1, lease=60)
    upstream.then(reply(delay=0.8))
    harness.workers.start()
    try:
        job_id = await harness.submit(headers_for(upstream, receiver))
        await harness.until(job_id, lambda j: j.owner is not None)
        await asyncio.wait_for(harness.workers.stop(grace=0.05), 1.0)
        job = await harness.job(job_id)
        # Still leased: it runs again once the lease lapses (at least once).
        assert job.status == QUEUED and job.owner is not None
        harness.fake.advance(61)
        assert await harness.store.job_claim("another", 60) is not None
    finally:
        await harness.client.aclose()


def stored_job(job_id: str, **fields: Any) -> Job:
    return Job(
        id=job_id,
        request=JobRequest("POST", "/", "", (), b""),
        callback_url="http://127.0.0.1:9/",
        created_at=0.0,
        retry_until=0.0,
        idempotency_key=job_id,
        **fields,
    )


async def test_purge_removes_only_old_finished_jobs() -> None:
    harness = Harness()
    now = harness.fake.t = 30 * 24 * 3600.0
    day = 24 * 3600.0
    await harness.store.job_add(
        stored_job("old", status=SUCCEEDED, delivered=True, finished_at=now - 8 * day)
    )
    await harness.store.job_add(
        stored_job("recent", status=SUCCEEDED, delivered=True, finished_at=now - day)
    )
    await harness.store.job_add(stored_job("open", due_at=now + day))
    assert await harness.workers.purge_once() == 1
    assert {job.id for job in await harness.store.job_list()} == {"recent", "open"}
    await harness.client.aclose()
