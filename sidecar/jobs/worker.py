"""Background workers: run due jobs through the inner pipeline, then call back.

`workers` tasks per sidecar each loop: claim the job due earliest (a lease
of `lease` seconds), do its next phase, save it with its next due time,
claim again. With nothing due a worker sleeps until woken (a job was just
accepted here) or `poll` seconds pass (a job accepted by another sidecar,
or a retry come due).

Phases (see sidecar.jobs.model):

- run: the request is rebuilt from the stored job and sent through
  `run_request`, the pipeline from Routing on (routes, smart cache,
  failover, retries, breaker, header stripping): exactly what a synchronous
  call with the same headers gets. Every run of a non-idempotent method
  carries the job's Idempotency-Key upstream. A 2xx/3xx answer: succeeded.
  A retryable one (5xx except 501, 429, and the sidecar's own 502/503/504)
  runs again after `run_delay(attempts)` while that is before the job's
  `retry_until`; otherwise, and for any other 4xx: failed.
- deliver: the outcome is POSTed to the callback URL (see webhooks.py).
  Only 2xx is delivered; 410 Gone stops delivery; anything else is retried
  after `delivery_delay(n)`, for at most DELIVERY_GIVE_UP seconds after the
  job finished or DELIVERY_MAX_ATTEMPTS deliveries.

Crash safety comes from the store: the next due time is saved, never kept
in memory, and a claim is a lease renewed every lease/3 while the phase
runs. A worker that dies lets its lease lapse and any worker takes the job
again (at least once). A renewal refused means the job was taken over or
cancelled: the worker drops it and saves nothing.

Timers (polling, renewal, purging) run on the event loop's own clock: they
are about this process being alive. Due times are judged by the store with
the injected clock, so tests move time with a FakeClock and `wake()`.

Each finished job becomes a `job` event (with an EventLog) once its
outcome is saved: succeeded or failed, with the last run's request id,
route, host, status and the number of runs; a job found cancelled while a
worker held it makes a `cancelled` one.

Logs and events name job ids and statuses only, never a request's headers
or body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sidecar.clock import Clock
from sidecar.errors import (
    EgressDenied,
    MirApiError,
    StoreUnavailable,
    UpstreamFailure,
    error_body,
    error_headers,
)
from sidecar.exchange import Exchange, Next, new_request_id
from sidecar.headers import IDEMPOTENT_METHODS, upstream_host
from sidecar.jobs.model import CANCELLED, FAILED, SUCCEEDED, Job, JobOutcome, JobRequest
from sidecar.observability.events import JOB, Event, EventLog
from sidecar.security.gate import inbound
from sidecar.store.jobs import JobStore

log = logging.getLogger(__name__)

#: Sends a job's callback once; the callback's status (raises when none came).
Deliver = Callable[[Job], Awaitable[int]]

#: Run retries back off from RUN_DELAY_BASE, doubling, up to an hour apart.
RUN_DELAY_BASE = 10.0
RUN_DELAY_CAP = 3600.0
#: Callback retries: from 5 s, doubling, up to an hour apart...
DELIVERY_DELAY_BASE = 5.0
DELIVERY_DELAY_CAP = 3600.0
#: ...until a day after the job finished, or this many deliveries.
DELIVERY_GIVE_UP = 24 * 3600.0
DELIVERY_MAX_ATTEMPTS = 30
#: Finished jobs are kept this long, then purged (checked once a minute).
DEFAULT_KEEP_FINISHED = 7 * 24 * 3600.0
PURGE_EVERY = 60.0
#: On stop, jobs under way get this long to end before they are left leased.
STOP_GRACE = 2.0

#: An answer too big to keep is not run again: it would not shrink.
TOO_LARGE_CODE = "response_too_large"
TOO_LARGE_ERROR = f"{TOO_LARGE_CODE} (500)"

#: A phase's result: the job as it should be saved, and the event to emit
#: once it is (when the job finished).
_Phased = tuple[Job, Event | None]

#: Not part of the run: the run must never become a job again.
_WEBHOOK_HEADERS = frozenset({"x-webhook-callback", "x-webhook-retry-for"})


def _jittered(delay: float, draw: float) -> float:
    # +-10%: jobs failed by one outage do not all come back at one instant.
    return delay * (0.9 + 0.2 * draw)


def run_delay(attempts: int, draw: float = 0.5) -> float:
    """Seconds before run number `attempts + 1`: 10 s doubling, capped at 1 h, +-10%."""
    return _jittered(min(RUN_DELAY_CAP, RUN_DELAY_BASE * 2 ** min(attempts - 1, 30)), draw)


def delivery_delay(deliveries: int, draw: float = 0.5) -> float:
    """Seconds before delivery number `deliveries + 1`: 5 s doubling, capped at 1 h."""
    return _jittered(
        min(DELIVERY_DELAY_CAP, DELIVERY_DELAY_BASE * 2 ** min(deliveries - 1, 30)), draw
    )


def is_retryable(status: int) -> bool:
    """5xx except 501, and 429: worth another run later."""
    return status == 429 or (500 <= status <= 599 and status != 501)


def job_exchange(request: JobRequest, idempotency_key: str, default_timeout: float) -> Exchange:
    """The stored request as an Exchange, policy parsed again from its headers."""
    headers = [(n, v) for n, v in request.headers if n not in _WEBHOOK_HEADERS]
    arrived = inbound(request.method, request.path, request.query, headers)
    exchange = arrived.exchange(request.body, default_timeout, client_id=request.client_id)
    if request.method not in IDEMPOTENT_METHODS:
        exchange.idempotency_key = idempotency_key
    return exchange


def _error_outcome(error: MirApiError, request_id: str) -> tuple[JobOutcome, str]:
    outcome = JobOutcome(
        error.status, tuple(error_headers(error, request_id)), error_body(error, request_id)
    )
    return outcome, f"{error.code} ({error.status})"


@dataclass(frozen=True, slots=True)
class _Ran:
    """Which request one run was, for the job's event (never its headers or body)."""

    request_id: str
    route: str | None = None
    host: str | None = None
    latency: float = 0.0


def _ran(exchange: Exchange, latency: float) -> _Ran:
    target = exchange.answered_by or exchange.target
    return _Ran(
        exchange.request_id,
        exchange.route.name if exchange.route is not None else None,
        upstream_host(target) if target else None,
        latency,
    )


class JobWorkers:
    """The sidecar's pool of job workers."""

    def __init__(
        self,
        store: JobStore,
        run_request: Next,
        deliver: Deliver,
        clock: Clock,
        *,
        workers: int,
        lease: float,
        keep_finished: float = DEFAULT_KEEP_FINISHED,
        poll: float = 0.5,
        default_timeout: float = 30.0,
        max_body: int = 10 * 1024**2,
        events: EventLog | None = None,
    ) -> None:
        self._store = store
        self._run_request = run_request
        self._deliver = deliver
        self._clock = clock
        self._workers = workers
        self._lease = lease
        self._keep_finished = keep_finished
        self._poll = poll
        self._default_timeout = default_timeout
        self._max_body = max_body
        self._events = events
        # Unique per process and start: a restarted sidecar never mistakes
        # an old lease for its own.
        self._process = os.urandom(6).hex()
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        #: Jobs this sidecar has leased since it started (its heartbeat says so).
        self.leased = 0

    def wake(self) -> None:
        """Tell idle workers there is work (a job was just accepted)."""
        self._wakeup.set()

    def start(self) -> None:
        """Start the worker tasks and the purger (inside the running loop)."""
        self._stopping = False
        self._stop.clear()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._loop(f"{self._process}-{index}"), name=f"job-worker-{index}")
            for index in range(self._workers)
        ]
        self._tasks.append(loop.create_task(self._purge_loop(), name="job-purger"))

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop claiming; jobs still running after `grace` stay leased (they run again)."""
        self._stopping = True
        self._stop.set()
        self._wakeup.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def purge_once(self) -> int:
        """Remove jobs finished more than `keep_finished` ago; how many."""
        return await self._store.job_purge(self._clock.now() - self._keep_finished)

    # -- the loop ----------------------------------------------------------------

    async def _loop(self, owner: str) -> None:
        while not self._stopping:
            # Cleared before claiming: a wake during the claim is not lost.
            self._wakeup.clear()
            job = await self._claim(owner)
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._poll)
                continue
            self.leased += 1
            try:
                await self._work(job, owner)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug: the lease lapses and the job runs again later.
                log.exception("job %s: the worker failed; it will run again", job.id)

    async def _claim(self, owner: str) -> Job | None:
        try:
            return await self._store.job_claim(owner, self._lease)
        except StoreUnavailable:
            return None
        except Exception:
            log.exception("claiming a job failed")
            return None

    async def _work(self, job: Job, owner: str) -> None:
        """One phase of `job` under its lease, renewed until the phase ends."""
        phase = asyncio.create_task(self._phase(job))
        renewal = asyncio.create_task(self._renew(job.id, owner, phase))
        try:
            done, event = await phase
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being stopped
            # Our renewal cancelled the phase: the job is no longer ours.
            await self._note_if_cancelled(job)
            return
        finally:
            renewal.cancel()
            phase.cancel()
        try:
            saved = await self._store.job_save(done, owner)
        except StoreUnavailable:
            log.warning("job %s: could not be saved; it will run again", job.id)
            return
        if not saved:
            log.info("job %s: taken over or cancelled meanwhile; result dropped", job.id)
            await self._note_if_cancelled(job)
            return
        # Only now: an outcome not saved is not final (the job runs again).
        if event is not None and self._events is not None:
            self._events.emit(event)

    async def _note_if_cancelled(self, job: Job) -> None:
        """A `cancelled` event when the job we lost was cancelled (not taken over)."""
        if self._events is None:
            return
        # One read, only on this rare path: losing a job is not the hot path.
        try:
            current = await self._store.job_get(job.id)
        except StoreUnavailable:
            return
        if current is not None and current.status == CANCELLED:
            self._events.emit(
                Event(
                    time=self._clock.now(),
                    kind=JOB,
                    reason=CANCELLED,
                    attempts=current.attempts,
                    detail=job.id,
                )
            )

    async def _renew(self, job_id: str, owner: str, phase: asyncio.Task[_Phased]) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                ours = await self._store.job_renew(job_id, owner, self._lease)
            except StoreUnavailable:
                continue  # try at the next tick; the lease may lapse meanwhile
            if not ours:
                log.info("job %s: lease lost; dropping it here", job_id)
                phase.cancel()
                return

    async def _phase(self, job: Job) -> _Phased:
        """The job as it should be saved after its next phase, and its event if it finished."""
        phase = job.phase
        if phase == "run":
            return await self._run(job)
        if phase == "deliver":
            return await self._deliver_once(job), None
        return job.with_(due_at=None), None

    # -- run -------------------------------------------------------------------

    async def _run(self, job: Job) -> _Phased:
        attempts = job.attempts + 1
        outcome, own_error, ran = await self._call(job)
        now = self._clock.now()
        log.info("job %s: run %d answered %d", job.id, attempts, outcome.status)
        if outcome.status < 400:
            done = self._finished(job, SUCCEEDED, outcome, attempts, now, None)
            return done, self._job_event(done, outcome, ran, now)
        # Short and safe: a status or the sidecar's error code, never a body.
        error = own_error or f"upstream answered {outcome.status}"
        if is_retryable(outcome.status) and own_error != TOO_LARGE_ERROR:
            delay = run_delay(attempts, self._clock.random())
            if now + delay < job.retry_until:
                again = job.with_(
                    attempts=attempts, due_at=now + delay, last_error=error, outcome=outcome
                )
                return again, None
        done = self._finished(job, FAILED, outcome, attempts, now, error)
        return done, self._job_event(done, outcome, ran, now)

    @staticmethod
    def _job_event(done: Job, outcome: JobOutcome, ran: _Ran, now: float) -> Event:
        return Event(
            time=now,
            kind=JOB,
            reason=done.status,
            request_id=ran.request_id,
            route=ran.route,
            host=ran.host,
            status=outcome.status,
            attempts=done.attempts,
            latency_ms=round(ran.latency * 1000, 2),
            detail=done.id,
        )

    @staticmethod
    def _finished(
        job: Job, status: str, outcome: JobOutcome, attempts: int, now: float, error: str | None
    ) -> Job:
        return job.with_(
            status=status,
            outcome=outcome,
            attempts=attempts,
            finished_at=now,
            due_at=now,  # the callback is due at once
            last_error=error if error is not None else job.last_error,
        )

    async def _call(self, job: Job) -> tuple[JobOutcome, str | None, _Ran]:
        """One run through the inner pipeline, as an outcome (errors included).

        The second item describes an error the sidecar answered by itself;
        the third says which request the run was.
        """
        started = self._clock.monotonic()
        try:
            exchange = job_exchange(job.request, job.idempotency_key, self._default_timeout)
        except Exception as error:
            request_id = new_request_id()
            return (*self._failed_call(job, error, request_id), _Ran(request_id))
        outcome, own_error = await self._send(job, exchange)
        return outcome, own_error, _ran(exchange, self._clock.monotonic() - started)

    async def _send(self, job: Job, exchange: Exchange) -> tuple[JobOutcome, str | None]:
        try:
            response = await self._run_request(exchange)
            try:
                body = await response.read(self._max_body)
            except ValueError:
                too_big = MirApiError(
                    f"the upstream's answer is over the {self._max_body}-byte limit",
                    code=TOO_LARGE_CODE,
                )
                return _error_outcome(too_big, exchange.request_id)
            return JobOutcome(response.status, tuple(response.headers), body), None
        except Exception as error:
            return self._failed_call(job, error, exchange.request_id)

    @staticmethod
    def _failed_call(job: Job, error: Exception, request_id: str) -> tuple[JobOutcome, str]:
        if isinstance(error, MirApiError):
            return _error_outcome(error, request_id)
        if isinstance(error, UpstreamFailure):
            return _error_outcome(error.as_error(), request_id)
        log.error("job %s: the run failed unexpectedly", job.id, exc_info=error)
        crash = MirApiError("the sidecar failed unexpectedly; see its log")
        return _error_outcome(crash, request_id)

    # -- deliver ---------------------------------------------------------------

    async def _deliver_once(self, job: Job) -> Job:
        deliveries = job.delivery_attempts + 1
        try:
            status: int | None = await self._deliver(job)
            problem = f"callback answered {status}"
        except EgressDenied:
            log.warning("job %s: the callback URL is no longer allowed; not delivered", job.id)
            return job.with_(
                delivery_attempts=deliveries,
                delivery_failed=True,
                due_at=None,
                last_error="callback refused by the egress policy",
            )
        except (MirApiError, UpstreamFailure) as error:
            status = None
            problem = f"callback unreachable ({_kind(error)})"
        now = self._clock.now()
        log.info("job %s: delivery %d answered %s", job.id, deliveries, status)
        if status is not None and 200 <= status < 300:
            return job.with_(delivery_attempts=deliveries, delivered=True, due_at=None)
        if status == 410:
            return job.with_(
                delivery_attempts=deliveries, delivery_failed=True, due_at=None, last_error=problem
            )
        delay = delivery_delay(deliveries, self._clock.random())
        finished = job.finished_at if job.finished_at is not None else now
        if deliveries >= DELIVERY_MAX_ATTEMPTS or now + delay > finished + DELIVERY_GIVE_UP:
            log.warning("job %s: callback given up after %d deliveries", job.id, deliveries)
            return job.with_(
                delivery_attempts=deliveries, delivery_failed=True, due_at=None, last_error=problem
            )
        return job.with_(delivery_attempts=deliveries, due_at=now + delay, last_error=problem)

    # -- purge -----------------------------------------------------------------

    async def _purge_loop(self) -> None:
        while not self._stopping:
            try:
                purged = await self.purge_once()
                if purged:
                    log.info("purged %d finished jobs", purged)
            except StoreUnavailable:
                pass
            except Exception:
                log.exception("purging finished jobs failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PURGE_EVERY)


def _kind(error: MirApiError | UpstreamFailure) -> str:
    return error.kind if isinstance(error, UpstreamFailure) else error.code
