"""The embedded store's jobs and webhook secret: straight to the file.

Jobs are durable like records: each add, save, claim and renew is its own
transaction on the writer thread, awaited (adds and saves fsynced, since a
202 promises the job survives; a claim or renew lost to a power cut only
makes the job due again sooner). Reads go to the file too, so `mirapi jobs`
in another process sees the sidecar's writes.

A job row's columns are the truth for `due_at` and `owner` (a claim changes
only them); the other columns are copies of fields of `data`, written with
it, for the queries.

One sidecar runs per data dir, so at open any job still owned belongs to a
dead process: the store that holds the data dir's `OwnerLock` makes it due
at once (`jobs_release_leases`, owner cleared) so it runs again right away.
"""

from __future__ import annotations

from sidecar.jobs.model import Job, decode_job, encode_job
from sidecar.store.embedded.sqlite import SQLite
from sidecar.store.embedded.state import EmbeddedState
from sidecar.store.memory.jobs import MemoryJobs

_JOB_COLUMNS = "data, due_at, owner"
_FIRST_DUE = (
    "SELECT id, data FROM jobs WHERE due_at IS NOT NULL AND due_at <= ? ORDER BY due_at, id LIMIT 1"
)
_PUT_JOB = (
    "INSERT OR REPLACE INTO jobs"
    " (id, due_at, status, created_at, finished_at, done, owner, data)"
    " VALUES (?, ?, ?, ?, ?, ?, NULL, ?)"
)


class JobRows(SQLite):
    """The statements of the `jobs` table and the webhook secret (in `meta`)."""

    def job_write(self, job: Job, owner: str | None) -> bool:
        """Insert or replace the job (owner cleared); with `owner`, only while it holds it."""
        with self._write_transaction(fsync=True) as conn:
            if owner is not None:
                row = conn.execute("SELECT owner FROM jobs WHERE id = ?", (job.id,)).fetchone()
                if row is None or row[0] != owner:
                    return False
            conn.execute(_PUT_JOB, _job_row(job))
        return True

    def job_claim(self, owner: str, now: float, lease_until: float) -> Job | None:
        with self._write_transaction(fsync=False) as conn:
            row = conn.execute(_FIRST_DUE, (now,)).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET due_at = ?, owner = ? WHERE id = ?", (lease_until, owner, row[0])
            )
        return decode_job(row[1]).with_(due_at=lease_until, owner=owner)

    def job_renew(self, job_id: str, owner: str, lease_until: float) -> bool:
        with self._write_transaction(fsync=False) as conn:
            renewed = conn.execute(
                "UPDATE jobs SET due_at = ? WHERE id = ? AND owner = ?",
                (lease_until, job_id, owner),
            ).rowcount
        return renewed > 0

    def job_get(self, job_id: str) -> Job | None:
        row = (
            self._connection()
            .execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        return None if row is None else _row_job(*row)

    def job_list(self, status: str | None, limit: int) -> list[Job]:
        conn = self._connection()
        order = "ORDER BY created_at DESC, id DESC LIMIT ?"
        if status is None:
            rows = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs {order}", (limit,))
        else:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = ? {order}", (status, limit)
            )
        return [_row_job(*row) for row in rows]

    def job_depth(self) -> int:
        (count,) = self._connection().execute("SELECT COUNT(*) FROM jobs WHERE done = 0").fetchone()
        return int(count)

    def job_purge(self, finished_before: float) -> int:
        with self._write_transaction(fsync=False) as conn:
            return conn.execute(
                "DELETE FROM jobs WHERE done = 1 AND finished_at < ?", (finished_before,)
            ).rowcount

    def jobs_release_leases(self, now: float) -> int:
        """Make every owned job due now: its owner died with its process."""
        with self._write_transaction(fsync=True) as conn:
            return conn.execute(
                "UPDATE jobs SET due_at = ?, owner = NULL WHERE owner IS NOT NULL", (now,)
            ).rowcount

    def webhook_secret(self, new: str) -> str:
        with self._write_transaction(fsync=True) as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('webhook_secret', ?)", (new,)
            )
            (secret,) = conn.execute(
                "SELECT value FROM meta WHERE key = 'webhook_secret'"
            ).fetchone()
        return str(secret)


def _job_row(job: Job) -> tuple[object, ...]:
    """The columns of `_PUT_JOB`, copied from the job itself (owner: none)."""
    return (
        job.id,
        job.due_at,
        job.status,
        job.created_at,
        job.finished_at,
        1 if job.phase == "done" else 0,
        encode_job(job.with_(owner=None)),
    )


def _row_job(data: bytes, due_at: float | None, owner: str | None) -> Job:
    # The columns, not the blob, hold the lease: a claim writes only them.
    return decode_job(data).with_(due_at=due_at, owner=owner)


class EmbeddedJobs(MemoryJobs, EmbeddedState):
    async def job_add(self, job: Job) -> None:
        if self._database is None:
            return await super().job_add(job)
        await self._on_file("job write", self._database.job_write, job, None)

    async def job_claim(self, owner: str, lease: float) -> Job | None:
        if self._database is None:
            return await super().job_claim(owner, lease)
        now = self._clock.now()
        return await self._on_file("job claim", self._database.job_claim, owner, now, now + lease)

    async def job_renew(self, job_id: str, owner: str, lease: float) -> bool:
        if self._database is None:
            return await super().job_renew(job_id, owner, lease)
        until = self._clock.now() + lease
        return await self._on_file("job renew", self._database.job_renew, job_id, owner, until)

    async def job_save(self, job: Job, owner: str | None) -> bool:
        if self._database is None:
            return await super().job_save(job, owner)
        return await self._on_file("job write", self._database.job_write, job, owner)

    async def job_get(self, job_id: str) -> Job | None:
        if self._database is None:
            return await super().job_get(job_id)
        return await self._on_file("job read", self._database.job_get, job_id)

    async def job_list(self, status: str | None = None, limit: int = 100) -> list[Job]:
        if self._database is None:
            return await super().job_list(status, limit)
        return await self._on_file("job read", self._database.job_list, status, max(0, limit))

    async def job_depth(self) -> int:
        if self._database is None:
            return await super().job_depth()
        return await self._on_file("job read", self._database.job_depth)

    async def job_purge(self, finished_before: float) -> int:
        if self._database is None:
            return await super().job_purge(finished_before)
        return await self._on_file("job purge", self._database.job_purge, finished_before)

    async def webhook_secret(self, new: str) -> str:
        if self._database is None:
            return await super().webhook_secret(new)
        return await self._on_file("webhook secret", self._database.webhook_secret, new)
