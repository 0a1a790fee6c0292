"""A job as the store keeps it (SPEC §5): the request, its schedule, its outcome.

A job moves through two phases, each retried on its own schedule, and the
store hands it to a worker whenever `due_at` has passed:

    queued ──run──▶ (retryable failure: due_at = next attempt) ──▶ ... ──▶
    succeeded | failed  (the call's outcome; `delivered` False)
        ──deliver──▶ (callback not 2xx: due_at = next delivery) ──▶ ...
        ──▶ delivered = True (or given up: delivery_failed)
    cancelled (by `mirapi jobs cancel`): never due again

Claiming a job is a lease: the store moves `due_at` to now + lease and
records the worker as `owner`; a worker that dies (SIGKILL) simply lets the
lease run out, and the job is due again for any worker — at least once,
with the same upstream `Idempotency-Key` every time. Nothing about a job's
schedule is held only in memory.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace

import orjson

#: Job status, as `GET /_mirapi/jobs/ID` and `mirapi jobs` show it.
QUEUED = "queued"  # accepted, not yet run to an outcome (retries included)
SUCCEEDED = "succeeded"  # the call got a 2xx/3xx answer
FAILED = "failed"  # a non-retryable answer, or retries ran out
CANCELLED = "cancelled"
STATUSES = (QUEUED, SUCCEEDED, FAILED, CANCELLED)

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class JobRequest:
    """The proxied request, kept whole so it can run again after a crash."""

    method: str
    path: str
    query: str
    #: Lower-case names, proxy headers included (the policy is re-read from them).
    headers: Headers
    body: bytes
    client_id: str = "local"


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """The upstream's final answer (or the sidecar's own error answer)."""

    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class Job:
    """One background job and everything needed to run and report it."""

    id: str
    request: JobRequest
    callback_url: str
    created_at: float
    #: Runs are retried until this wall-clock time (X-Webhook-Retry-For).
    retry_until: float
    #: The Idempotency-Key every attempt carries upstream.
    idempotency_key: str
    status: str = QUEUED
    attempts: int = 0
    #: When a worker may next take the job (run or deliver); None: never.
    due_at: float | None = None
    last_error: str | None = None
    outcome: JobOutcome | None = None
    finished_at: float | None = None
    delivery_attempts: int = 0
    delivered: bool = False
    #: The callback was given up on (410, or its retries ran out).
    delivery_failed: bool = False
    #: The worker holding the lease, while one does.
    owner: str | None = None

    @property
    def phase(self) -> str:
        """ "run", "deliver", or "done" (nothing left to do)."""
        if self.status == CANCELLED or self.delivered or self.delivery_failed:
            return "done"
        return "run" if self.status == QUEUED else "deliver"

    def with_(self, **changes: object) -> Job:
        """A copy with `changes` (the fields are frozen)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def encode_job(job: Job) -> bytes:
    """The job as stored: JSON, bodies in base64."""
    return orjson.dumps(_job_dict(job))


def decode_job(data: bytes) -> Job:
    """The inverse of `encode_job`."""
    raw = orjson.loads(data)
    request = raw["request"]
    outcome = raw.get("outcome")
    return Job(
        id=raw["id"],
        request=JobRequest(
            method=request["method"],
            path=request["path"],
            query=request["query"],
            headers=_headers(request["headers"]),
            body=base64.b64decode(request["body"]),
            client_id=request.get("client_id", "local"),
        ),
        callback_url=raw["callback_url"],
        created_at=raw["created_at"],
        retry_until=raw["retry_until"],
        idempotency_key=raw["idempotency_key"],
        status=raw["status"],
        attempts=raw["attempts"],
        due_at=raw.get("due_at"),
        last_error=raw.get("last_error"),
        outcome=None
        if outcome is None
        else JobOutcome(
            outcome["status"], _headers(outcome["headers"]), base64.b64decode(outcome["body"])
        ),
        finished_at=raw.get("finished_at"),
        delivery_attempts=raw.get("delivery_attempts", 0),
        delivered=raw.get("delivered", False),
        delivery_failed=raw.get("delivery_failed", False),
        owner=raw.get("owner"),
    )


def public_view(job: Job) -> dict[str, object]:
    """What the status endpoint and `mirapi jobs show --json` print: never a body."""
    return {
        "id": job.id,
        "status": job.status,
        "attempts": job.attempts,
        "next_attempt_at": job.due_at if job.phase != "done" else None,
        "last_error": job.last_error,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "response_status": None if job.outcome is None else job.outcome.status,
        "callback": {
            "delivered": job.delivered,
            "failed": job.delivery_failed,
            "attempts": job.delivery_attempts,
        },
    }


def _headers(raw: list[list[str]]) -> Headers:
    return tuple((str(name), str(value)) for name, value in raw)


def _job_dict(job: Job) -> dict[str, object]:
    request = job.request
    return {
        "id": job.id,
        "request": {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": request.headers,
            "body": base64.b64encode(request.body).decode(),
            "client_id": request.client_id,
        },
        "callback_url": job.callback_url,
        "created_at": job.created_at,
        "retry_until": job.retry_until,
        "idempotency_key": job.idempotency_key,
        "status": job.status,
        "attempts": job.attempts,
        "due_at": job.due_at,
        "last_error": job.last_error,
        "outcome": None
        if job.outcome is None
        else {
            "status": job.outcome.status,
            "headers": job.outcome.headers,
            "body": base64.b64encode(job.outcome.body).decode(),
        },
        "finished_at": job.finished_at,
        "delivery_attempts": job.delivery_attempts,
        "delivered": job.delivered,
        "delivery_failed": job.delivery_failed,
        "owner": job.owner,
    }
