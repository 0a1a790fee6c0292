"""Async: `X-Webhook-Callback` turns a request into a durable job (SPEC §2.5, §5).

Without the header the stage passes at once. With it:

1. The callback URL is vetted against the egress policy now, so a callback
   the sidecar may not call is refused at submit time (403 egress_denied),
   not discovered hours later. A host that does not resolve yet is
   accepted: delivery is retried on its own schedule. A request that could
   never be sent (its URL or a header) is refused too (400), never accepted
   and failed for a day; the door and the URL parser refuse almost all of
   that before this stage.
2. The job (the request as received, its schedule and the upstream
   Idempotency-Key) is written with `store.job_add`, which returns only once
   the job is durable. A store that cannot take it raises StoreUnavailable:
   503 with Retry-After, and the client knows nothing was accepted.
3. Only then: 202 with {"job_id", "status_url"} and `Location`, and the
   local workers are woken so the job starts at once.

The job's upstream Idempotency-Key is the client's X-Proxy-Idempotency-Key,
else the job id: the same on every attempt, across restarts and sidecars.

`NoAsyncJobs` stands in where there are no workers (`mirapi curl` without
`--via`): a callback there is refused with 400 rather than silently
answered synchronously.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson

from sidecar.clock import Clock
from sidecar.errors import BadHeader, UpstreamUnreachable
from sidecar.exchange import Exchange, Next, Response
from sidecar.jobs.model import Job, JobRequest
from sidecar.outbound.upstream import check_sendable
from sidecar.security.egress import Egress
from sidecar.store.jobs import JobStore

log = logging.getLogger(__name__)

#: Where a job's status is served; the job id is appended.
STATUS_PATH = "/_mirapi/jobs/"

#: Not kept with the job: the sidecar's own API key is checked at submit
#: time and is of no use to the run (the job keeps the client id instead),
#: and a passphrase is never written anywhere; a job's run decrypts secrets
#: with the passphrase the sidecar was unlocked with.
_NOT_STORED = frozenset({"x-mirapi-key", "x-proxy-master-key"})


def new_job_id() -> str:
    """ "job_" + 24 random hex characters."""
    return "job_" + secrets.token_hex(12)


def new_job(exchange: Exchange, callback_url: str, now: float) -> Job:
    """The job for `exchange`, due at once."""
    job_id = new_job_id()
    policy = exchange.policy
    request = JobRequest(
        method=exchange.method,
        path=exchange.received_path(),
        query=exchange.query,
        headers=tuple((n, v) for n, v in exchange.headers if n not in _NOT_STORED),
        body=exchange.body,
        client_id=exchange.client_id,
    )
    return Job(
        id=job_id,
        request=request,
        callback_url=callback_url,
        created_at=now,
        retry_until=now + policy.webhook_retry_for,
        idempotency_key=policy.idempotency_key or job_id,
        due_at=now,
    )


def accepted(job: Job) -> Response:
    """202 with the job id and where to watch it."""
    status_url = STATUS_PATH + job.id
    body = orjson.dumps({"job_id": job.id, "status_url": status_url})
    headers = [("content-type", "application/json"), ("location", status_url)]
    return Response(202, headers, body)


async def vet_callback(egress: Egress, url: str) -> None:
    """EgressDenied when the policy forbids `url`; an unresolvable host passes."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        await egress.vet(parts.hostname or "", port)
    except UpstreamUnreachable:
        # DNS may work by delivery time; each delivery is vetted again.
        pass


class AsyncJobs:
    """Stores a request with a callback as a job and answers 202."""

    def __init__(
        self,
        store: JobStore,
        clock: Clock,
        egress: Egress,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._egress = egress
        self._wake = wake

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        callback = exchange.policy.webhook_callback
        if callback is None:
            return await call_next(exchange)
        await vet_callback(self._egress, callback)
        # The door and the URL parser already refused what cannot be sent;
        # this makes sure nothing is accepted that every run would fail.
        for target in exchange.targets:
            check_sendable(exchange.method, target, exchange.headers)
        job = new_job(exchange, callback, self._clock.now())
        # Raises StoreUnavailable (503, Retry-After) when not durable.
        await self._store.job_add(job)
        log.info("job %s accepted", job.id)
        if self._wake is not None:
            self._wake()
        return accepted(job)


class NoAsyncJobs:
    """Where no workers run: a callback request is a mistake, said plainly."""

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        if exchange.policy.webhook_callback is not None:
            raise BadHeader("X-Webhook-Callback", "needs a running sidecar (use --via)")
        return await call_next(exchange)
