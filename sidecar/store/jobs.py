"""The jobs capability: the async job queue and the webhook secret (SPEC §5).

Durable: `job_add`, `job_save` and the webhook secret return only once
committed (SQLite) or acknowledged (Redis), else StoreUnavailable. A claim
is a lease: it moves the job's `due_at` to now + lease and sets `owner`, so
a worker that dies lets the job come due again by itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sidecar.jobs.model import Job


class JobStore(Protocol):
    """Shared only: StoreUnavailable while Redis is lost (an accepted job must survive)."""

    async def job_add(self, job: Job) -> None:
        """Store a new job (encoded with `sidecar.jobs.model.encode_job`)."""

    async def job_claim(self, owner: str, lease: float) -> Job | None:
        """Atomically take the job due earliest (due_at <= now), leased to `owner`."""

    async def job_renew(self, job_id: str, owner: str, lease: float) -> bool:
        """Push our lease to now + lease; False when the job is no longer ours."""

    async def job_save(self, job: Job, owner: str | None) -> bool:
        """Write `job` whole (its `due_at` is the next time it is due, None: never).

        With `owner`, only while that worker still holds the lease (False
        otherwise, nothing written); with None, unconditionally (the CLI's
        cancel and retry). The saved job has no owner.
        """

    async def job_get(self, job_id: str) -> Job | None:
        """The job, or None."""

    async def job_list(self, status: str | None = None, limit: int = 100) -> list[Job]:
        """Jobs, newest first, optionally of one status."""

    async def job_depth(self) -> int:
        """How many jobs still have work to do (run or deliver)."""

    async def job_purge(self, finished_before: float) -> int:
        """Remove jobs with nothing left to do that finished before the time; the count."""

    async def webhook_secret(self, new: str) -> str:
        """The install's signing secret: the stored one, else store `new` and return it."""
