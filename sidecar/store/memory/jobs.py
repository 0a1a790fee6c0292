"""The memory store's jobs: a dict of `Job`s (owner and due_at inside),
scanned for the claim, and the webhook secret.

Memory-only stores hold few jobs (tests, one-shot runs); the Redis store's
fallback never holds jobs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidecar.store.memory.state import MemoryState

if TYPE_CHECKING:
    from sidecar.jobs.model import Job


class MemoryJobs(MemoryState):
    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[str, Job] = {}
        self._webhook_secret: str | None = None

    async def job_add(self, job: Job) -> None:
        self._jobs[job.id] = job.with_(owner=None)

    async def job_claim(self, owner: str, lease: float) -> Job | None:
        now = self._clock.now()
        due = [job for job in self._jobs.values() if job.due_at is not None and job.due_at <= now]
        if not due:
            return None
        # The same order as the other backends: earliest due, then id.
        first = min(due, key=lambda job: (job.due_at, job.id))
        claimed = first.with_(due_at=now + lease, owner=owner)
        self._jobs[claimed.id] = claimed
        return claimed

    async def job_renew(self, job_id: str, owner: str, lease: float) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            return False
        self._jobs[job_id] = job.with_(due_at=self._clock.now() + lease)
        return True

    async def job_save(self, job: Job, owner: str | None) -> bool:
        if owner is not None:
            stored = self._jobs.get(job.id)
            if stored is None or stored.owner != owner:
                return False
        self._jobs[job.id] = job.with_(owner=None)
        return True

    async def job_get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def job_list(self, status: str | None = None, limit: int = 100) -> list[Job]:
        jobs = [job for job in self._jobs.values() if status is None or job.status == status]
        jobs.sort(key=lambda job: (job.created_at, job.id), reverse=True)
        return jobs[: max(0, limit)]

    async def job_depth(self) -> int:
        return sum(1 for job in self._jobs.values() if job.phase != "done")

    async def job_purge(self, finished_before: float) -> int:
        gone = [job.id for job in self._jobs.values() if _purgeable(job, finished_before)]
        for job_id in gone:
            del self._jobs[job_id]
        return len(gone)

    async def webhook_secret(self, new: str) -> str:
        if self._webhook_secret is None:
            self._webhook_secret = new
        return self._webhook_secret


def _purgeable(job: Job, finished_before: float) -> bool:
    """Nothing left to do, and finished before the time (never without a finish time)."""
    return job.phase == "done" and job.finished_at is not None and job.finished_at < finished_before
