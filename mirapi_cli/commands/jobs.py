"""`mirapi jobs list | show | retry | cancel`: background jobs (SPEC §5).

    list [--status S] [--limit N] [--json]   newest first
    show ID [--json]                          what GET /_mirapi/jobs/ID shows
    retry ID                                  run a failed or cancelled job again,
                                              or deliver again a callback given up on
    cancel ID                                 a queued job is never run

Jobs live in the store, not in a running sidecar: each command opens the
store the sidecar uses (the data dir's SQLite, or Redis with `--redis`),
so it works whether or not one runs. `retry` and `cancel` write the job
whole and unconditionally (`job_save(job, None)`), which also ends any
worker's lease on it: that worker's own result is then dropped.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mirapi_cli.errors import CliError
from mirapi_cli.options import ConfigOption, DataDirOption, JsonOption
from mirapi_cli.store_access import with_store

if TYPE_CHECKING:
    from rich.console import RenderableType

    from sidecar.jobs.model import Job
    from sidecar.store.jobs import JobStore

RedisOption = Annotated[
    str | None,
    typer.Option("--redis", metavar="URL", help="Jobs shared through Redis (env: MIRAPI_REDIS)."),
]
IdArgument = Annotated[str, typer.Argument(metavar="ID", help="The job id (from the 202 answer).")]

app = typer.Typer(
    help="Inspect, retry and cancel background jobs (X-Webhook-Callback).",
    no_args_is_help=True,
)


@app.command("list")
def list_jobs(
    status: Annotated[
        str | None,
        typer.Option(metavar="STATUS", help="Only jobs in this status: queued, succeeded, ..."),
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="At most N jobs.")] = 100,
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List jobs, newest first: status, attempts, next attempt, last error."""
    from mirapi_cli import output
    from sidecar.jobs.model import STATUSES, public_view

    if status is not None and status not in STATUSES:
        raise CliError(f"--status: {status!r} is not one of {', '.join(STATUSES)}")

    async def load(store: JobStore) -> list[Job]:
        return await store.job_list(status, limit)

    jobs = with_store(data_dir, config, redis, load)

    def human() -> RenderableType | str:
        if not jobs:
            return f"no {status} jobs" if status else "no jobs"
        return output.table(
            ("ID", "Status", "Attempts", "Next attempt", "Last error", "Callback", "Created"),
            (
                (
                    job.id,
                    job.status,
                    job.attempts,
                    _time(_next_attempt(job)),
                    job.last_error,
                    _callback(job),
                    _time(job.created_at),
                )
                for job in jobs
            ),
            # An id is copied into `jobs show`: never cut; a narrow terminal
            # leaves out the columns `jobs show` has too.
            ids=("ID",),
            optional=("Callback", "Created", "Next attempt", "Attempts"),
        )

    output.listing([public_view(job) for job in jobs], as_json=as_json, human=human)


@app.command()
def show(
    job_id: IdArgument,
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one job: status, attempts, next attempt, last error (never a body)."""
    from mirapi_cli import output
    from sidecar.jobs.model import public_view

    job = _get(job_id, data_dir, config, redis)

    def human() -> RenderableType:
        rows: dict[str, object] = {
            "id": job.id,
            "status": job.status,
            "attempts": job.attempts,
            "next attempt": _time(_next_attempt(job)) or "none",
            "last error": job.last_error or "none",
            "response status": "none" if job.outcome is None else job.outcome.status,
            "callback": _callback(job),
            "callback attempts": job.delivery_attempts,
            "created": _time(job.created_at),
            "finished": _time(job.finished_at) or "not yet",
        }
        return output.key_value_table(rows)

    output.emit(public_view(job), as_json=as_json, human=human)


@app.command()
def retry(
    job_id: IdArgument,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run a failed or cancelled job again now; deliver a given-up callback again."""
    from mirapi_cli import output

    async def reset(store: JobStore) -> str:
        job = await _job(store, job_id)
        again, message = retried(job, time.time())
        await store.job_save(again, None)
        return message

    output.say(with_store(data_dir, config, redis, reset))


@app.command()
def cancel(
    job_id: IdArgument,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Cancel a queued job: it is never run (again)."""
    from mirapi_cli import output

    async def stop(store: JobStore) -> str:
        job = await _job(store, job_id)
        await store.job_save(cancelled(job, time.time()), None)
        if job.owner is not None:
            # A worker holds it right now: its call may still reach the
            # upstream, but its result is dropped (the lease is gone).
            return f"job {job_id!r} cancelled (a run in progress may still reach the upstream)"
        return f"job {job_id!r} cancelled"

    output.say(with_store(data_dir, config, redis, stop))


# -- the changes, as pure functions ------------------------------------------------


def retried(job: Job, now: float) -> tuple[Job, str]:
    """The job made due again now, and what to tell the user; CliError when refused.

    A failed or cancelled job runs again from the start (attempts kept, with
    a fresh retry window as long as its first one). A succeeded job whose
    callback was given up on is not called again (the upstream already
    acted on it): only its callback is delivered again.
    """
    from sidecar.jobs.model import CANCELLED, FAILED, QUEUED, SUCCEEDED

    delivery_reset: dict[str, object] = {
        "due_at": now,
        "delivered": False,
        "delivery_failed": False,
        "delivery_attempts": 0,
        "owner": None,
    }
    if job.status in (FAILED, CANCELLED):
        window = max(job.retry_until - job.created_at, 0.0)
        again = job.with_(
            status=QUEUED,
            outcome=None,
            finished_at=None,
            retry_until=now + window,
            **delivery_reset,
        )
        return again, f"job {job.id!r} queued to run again (attempts so far: {job.attempts})"
    if job.status == SUCCEEDED and job.delivery_failed:
        return job.with_(**delivery_reset), f"job {job.id!r}: its callback will be delivered again"
    if job.status == QUEUED:
        raise CliError(f"job {job.id!r} is queued and will run by itself; nothing to retry")
    raise CliError(
        f"job {job.id!r} is {job.status}"
        + (" and its callback was delivered" if job.delivered else "")
        + "; only a failed or cancelled job, or one whose callback gave up, can be retried"
    )


def cancelled(job: Job, now: float) -> Job:
    """The queued job cancelled; CliError for a job already finished."""
    from sidecar.jobs.model import CANCELLED, QUEUED

    if job.status == CANCELLED:
        raise CliError(f"job {job.id!r} is cancelled already")
    if job.status != QUEUED:
        raise CliError(
            f"job {job.id!r} is {job.status} already; only a queued job can be cancelled"
        )
    return job.with_(status=CANCELLED, due_at=None, finished_at=now, owner=None)


# -- helpers -------------------------------------------------------------------------


def _get(job_id: str, data_dir: Path | None, config: Path | None, redis: str | None) -> Job:
    async def get(store: JobStore) -> Job:
        return await _job(store, job_id)

    return with_store(data_dir, config, redis, get)


async def _job(store: JobStore, job_id: str) -> Job:
    job = await store.job_get(job_id)
    if job is None:
        raise CliError(f"no job {job_id!r}")
    return job


def _next_attempt(job: Job) -> float | None:
    return job.due_at if job.phase != "done" else None


def _callback(job: Job) -> str:
    if job.delivered:
        return "delivered"
    if job.delivery_failed:
        return "gave up"
    if job.phase == "deliver":
        return "pending"
    return ""


def _time(at: float | None) -> str:
    """Wall-clock seconds as UTC, to the second; empty for None."""
    if at is None:
        return ""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
