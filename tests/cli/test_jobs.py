"""`mirapi jobs` and `mirapi webhooks secret` through the real CLI.

Jobs are put straight into the data dir's embedded store (the one
`mirapi jobs` opens) through `sidecar.store.store_for`; every command is a
real `mirapi` process. Independent read-only calls run concurrently.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import Settings
from sidecar.jobs.model import (
    CANCELLED,
    FAILED,
    QUEUED,
    SUCCEEDED,
    Job,
    JobOutcome,
    JobRequest,
    public_view,
)
from sidecar.store import store_for
from tests.support.cli import run_mirapi

NOW = time.time()


class Run:
    """One finished `mirapi` process."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


async def mirapi(data_dir: Path, *args: str) -> Run:
    code, out, err = await run_mirapi(data_dir, *args)
    return Run(code, out.decode(), err)


def job(job_id: str, age: float, **changes: Any) -> Job:
    """A job created `age` seconds ago, with `changes`."""
    created = NOW - age
    base = Job(
        id=job_id,
        request=JobRequest("POST", "/v1/charges", "", (("x-target-url", "https://a.test"),), b"x"),
        callback_url="https://hooks.example/cb",
        created_at=created,
        retry_until=created + 3600,
        idempotency_key=f"key-{job_id}",
        due_at=created,
    )
    return base.with_(**changes)


DONE = JobOutcome(200, (("content-type", "application/json"),), b'{"ok":true}')


async def seed(data_dir: Path, *jobs: Job) -> None:
    """Store `jobs` whole in the data dir's embedded store."""
    store = store_for(Settings(data_dir=data_dir))
    await store.open()
    try:
        for one in jobs:
            await store.job_add(one)
            await store.job_save(one, None)
    finally:
        await store.close()


async def stored(data_dir: Path, job_id: str) -> Job | None:
    store = store_for(Settings(data_dir=data_dir))
    await store.open()
    try:
        return await store.job_get(job_id)
    finally:
        await store.close()


async def test_list_and_show_print_the_public_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the table on one line per job
    data = tmp_path / "data"
    queued = job("j-queued", 30, attempts=2, last_error="upstream answered 503")
    succeeded = job(
        "j-done", 20, status=SUCCEEDED, attempts=1, outcome=DONE, finished_at=NOW, delivered=True
    )
    failed = job("j-failed", 10, status=FAILED, attempts=5, finished_at=NOW, due_at=NOW)
    await seed(data, queued, succeeded, failed)

    listed, only_failed, shown, human_list, human_show = await asyncio.gather(
        mirapi(data, "jobs", "list", "--json"),
        mirapi(data, "jobs", "list", "--status", "failed", "--json"),
        mirapi(data, "jobs", "show", "j-done", "--json"),
        mirapi(data, "jobs", "list"),
        mirapi(data, "jobs", "show", "j-queued"),
    )

    assert [j["id"] for j in listed.json()] == ["j-failed", "j-done", "j-queued"]  # newest first
    assert listed.json()[2] == public_view(queued)
    assert [j["id"] for j in only_failed.json()] == ["j-failed"]
    view = shown.json()
    assert {"id", "status", "attempts"} <= view.keys()
    assert view == public_view(succeeded)
    assert view["response_status"] == 200 and view["callback"]["delivered"] is True
    assert "ok" not in shown.out  # never the body
    # Piped without --json: JSON lines, one job a line, every field whole.
    assert human_list.code == 0
    assert [json.loads(line) for line in human_list.out.splitlines()] == listed.json()
    assert human_show.code == 0
    assert "j-queued" in human_show.out and "upstream answered 503" in human_show.out


async def test_unknown_ids_and_bad_statuses_are_one_line_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await seed(data, job("j-1", 5))

    runs = await asyncio.gather(
        mirapi(data, "jobs", "show", "nope"),
        mirapi(data, "jobs", "show", "nope", "--json"),
        mirapi(data, "jobs", "retry", "nope"),
        mirapi(data, "jobs", "cancel", "nope"),
    )
    for run in runs:
        assert (run.code, run.err, run.out) == (1, "mirapi: error: no job 'nope'\n", "")

    bad, empty, none_of_them = await asyncio.gather(
        mirapi(data, "jobs", "list", "--status", "done"),
        mirapi(tmp_path / "empty", "jobs", "list"),
        mirapi(data, "jobs", "list", "--status", "cancelled", "--json"),
    )
    assert bad.code == 1 and "--status: 'done' is not one of queued" in bad.err
    assert (empty.code, empty.out) == (0, "") and "no jobs" in empty.err
    assert none_of_them.json() == []


async def test_cancel_stops_a_queued_job_and_refuses_a_finished_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = job("j-done", 20, status=SUCCEEDED, outcome=DONE, finished_at=NOW, delivered=True)
    await seed(data, job("j-queued", 10, attempts=1), done)

    cancelled = await mirapi(data, "jobs", "cancel", "j-queued")
    assert cancelled.code == 0, cancelled.err
    assert "cancelled" in cancelled.out
    after = await stored(data, "j-queued")
    assert after is not None
    assert (after.status, after.due_at, after.attempts, after.phase) == (CANCELLED, None, 1, "done")
    assert after.finished_at is not None and after.finished_at >= NOW

    refused, again = await asyncio.gather(
        mirapi(data, "jobs", "cancel", "j-done"),
        mirapi(data, "jobs", "cancel", "j-queued"),
    )
    assert refused.code == 1
    assert "job 'j-done' is succeeded already; only a queued job can be cancelled" in refused.err
    assert await stored(data, "j-done") == done
    assert again.code == 1 and "is cancelled already" in again.err


async def test_retry_reruns_failed_and_cancelled_jobs_with_their_attempts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    failed = job(
        "j-failed",
        7200,  # its retry window ran out long ago
        status=FAILED,
        attempts=5,
        last_error="upstream answered 503",
        outcome=JobOutcome(503, (), b"down"),
        finished_at=NOW - 60,
        delivered=True,
        delivery_attempts=1,
        due_at=None,
    )
    cancelled = job("j-cancelled", 10, status=CANCELLED, finished_at=NOW, due_at=None)
    await seed(data, failed, cancelled)

    first, second = await asyncio.gather(
        mirapi(data, "jobs", "retry", "j-failed"), mirapi(data, "jobs", "retry", "j-cancelled")
    )
    assert first.code == 0, first.err
    assert second.code == 0, second.err

    for job_id, attempts in (("j-failed", 5), ("j-cancelled", 0)):
        after = await stored(data, job_id)
        assert after is not None
        assert (after.status, after.attempts, after.outcome, after.phase) == (
            QUEUED,
            attempts,
            None,
            "run",
        )
        assert after.due_at is not None and NOW <= after.due_at <= time.time()
        assert not after.delivered and after.delivery_attempts == 0
        # A fresh retry window, as long as the first one: at least one run.
        assert after.retry_until > time.time() + 3000
    shown = (await mirapi(data, "jobs", "show", "j-failed", "--json")).json()
    assert (shown["status"], shown["attempts"]) == ("queued", 5)


async def test_retry_redelivers_a_given_up_callback_and_refuses_the_rest(tmp_path: Path) -> None:
    data = tmp_path / "data"
    gave_up = job(
        "j-gave-up",
        30,
        status=SUCCEEDED,
        attempts=1,
        outcome=DONE,
        finished_at=NOW,
        delivery_failed=True,
        delivery_attempts=12,
        due_at=None,
    )
    delivered = job(
        "j-delivered", 20, status=SUCCEEDED, outcome=DONE, finished_at=NOW, delivered=True
    )
    queued = job("j-queued", 10)
    await seed(data, gave_up, delivered, queued)

    redeliver, refused_done, refused_queued = await asyncio.gather(
        mirapi(data, "jobs", "retry", "j-gave-up"),
        mirapi(data, "jobs", "retry", "j-delivered"),
        mirapi(data, "jobs", "retry", "j-queued"),
    )

    assert redeliver.code == 0, redeliver.err
    after = await stored(data, "j-gave-up")
    assert after is not None
    # The call succeeded upstream: it is not made again, only reported again.
    assert (after.status, after.outcome, after.phase) == (SUCCEEDED, DONE, "deliver")
    assert not after.delivery_failed and after.delivery_attempts == 0
    assert after.due_at is not None and after.due_at <= time.time()
    assert refused_done.code == 1
    assert "job 'j-delivered' is succeeded and its callback was delivered" in refused_done.err
    assert refused_queued.code == 1 and "will run by itself" in refused_queued.err
    assert await stored(data, "j-delivered") == delivered
    assert await stored(data, "j-queued") == queued


async def test_webhooks_secret_is_created_once_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = await mirapi(data, "webhooks", "secret")
    second = await mirapi(data, "webhooks", "secret")

    assert first.code == 0, first.err
    secret = first.out.strip()
    assert first.out == secret + "\n"  # one line, nothing else
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24
    assert second.out == first.out
