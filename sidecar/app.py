"""The sidecar's ASGI application: a lean proxy path in front of Quart.

Proxied requests are dispatched straight to the pipeline by a small ASGI
callable: Quart's per-request machinery costs about 0.5 ms on Hypercorn
(PERFORMANCE.md), more than the whole budget of the hot path. Quart keeps
serving the sidecar's own endpoints under `/_mirapi/`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace
from typing import Any

from sidecar import __version__, client_keys, secrets
from sidecar.client_keys import ClientKey
from sidecar.clock import SYSTEM_CLOCK, Clock
from sidecar.config import Settings, is_loopback_listen
from sidecar.control import make_control_app
from sidecar.dashboard import is_public_path
from sidecar.egress import Egress, EgressPolicy
from sidecar.errors import (
    BadRequestFraming,
    MirApiError,
    PayloadTooLarge,
    error_body,
    error_headers,
)
from sidecar.events import BREAKER, JOB, Event, EventLog
from sidecar.exchange import Exchange, Response, new_request_id
from sidecar.fleet import FleetService
from sidecar.gate import LOCAL_CLIENT, Gate, read_request
from sidecar.headers import upstream_host
from sidecar.jobs.webhooks import CallbackSender
from sidecar.jobs.worker import JobWorkers
from sidecar.llm.errors import error_body as llm_error_body
from sidecar.llm.meter import LlmMeter
from sidecar.llm.prices import PriceBook
from sidecar.logging import AccessLog
from sidecar.metrics import Metrics
from sidecar.observe import Observer, Outcome
from sidecar.pipeline import Parts, build_chain, build_job_chain
from sidecar.record_table import RecordTable
from sidecar.recorder import Recorder
from sidecar.route_table import RouteTable
from sidecar.secrets import Secret
from sidecar.stages.async_jobs import AsyncJobs
from sidecar.stages.inject_secrets import InjectSecrets
from sidecar.stages.rate_limit import RateLimit
from sidecar.stats import StatsCounter
from sidecar.store import store_for
from sidecar.store.base import Store
from sidecar.upstream import UpstreamClient
from sidecar.vault import Vault

Scope = dict[str, Any]
ASGIReceive = Any
ASGISend = Any

CONTROL_PREFIX = "/_mirapi/"
#: Control endpoints open to probes without a client key (they tell nothing private).
PROBES = frozenset({"/_mirapi/healthz", "/_mirapi/livez", "/_mirapi/readyz"})
#: Hosts whose breaker state is shown (metrics, dashboard); the oldest
#: change is forgotten past it, as the store forgets breakers (MAX_BREAKERS).
MAX_BREAKER_STATES = 4096
#: readyz waits this long for the job queue's depth, then leaves it out.
READYZ_STORE_TIMEOUT = 1.0

log = logging.getLogger("mirapi")


class BodyReader:
    """Reads a request body once, refusing it past `limit` bytes with 413."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def read(self, receive: ASGIReceive, declared: str | None) -> bytes:
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > self.limit
        ):
            raise PayloadTooLarge(f"the request body is over the {self.limit}-byte limit")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionResetError("the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise PayloadTooLarge(f"the request body is over the {self.limit}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Sidecar:
    """The ASGI callable Hypercorn serves."""

    def __init__(
        self,
        settings: Settings,
        *,
        egress: Egress | None = None,
        client: UpstreamClient | None = None,
        store: Store | None = None,
        clock: Clock = SYSTEM_CLOCK,
        master_key: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.started_at = clock.now()
        self.egress = egress or EgressPolicy(
            allow_private=settings.allow_private, allow_hosts=settings.allow_hosts
        )
        self.client = client or UpstreamClient(self.egress)
        self.store = store or store_for(settings, clock)
        # Written in the background; stages, workers and outcomes feed it.
        self.events = EventLog(self.store)
        # Filled from the store at start-up, then kept fresh by polling it.
        self.routes = RouteTable(self.store)
        self.keys: RecordTable[ClientKey] = RecordTable(
            self.store, client_keys.KIND, client_keys.decode
        )
        # A unix socket cannot be reached by a browser: no Host to check there.
        self.gate = Gate(self.keys.all, settings.server_names, check_host=settings.unix is None)
        self.secrets: RecordTable[Secret] = RecordTable(self.store, secrets.KIND, secrets.decode)
        # One vault for requests and jobs: one key cache, one cap on derivations.
        inject = InjectSecrets(self.secrets.all, Vault(), master_key)
        self.llm = LlmMeter(self.store, PriceBook(settings.llm), clock)
        # One set of parts for both chains: jobs and live requests share one
        # retry budget (a sick upstream's), one cache, one breaker per host.
        parts = Parts(
            store=self.store,
            max_body=settings.max_body,
            cache_entry_limit=cache_entry_limit(settings),
            clock=clock,
            routes=self.routes,
            secrets=inject,
            events=self.events,
            llm=self.llm,
        )
        job_chain = build_job_chain(self.client, parts)
        self.callbacks = CallbackSender(self.store, self.client, clock)
        self.jobs = JobWorkers(
            self.store,
            job_chain,
            self.callbacks,
            clock,
            workers=settings.job_workers,
            lease=settings.job_lease,
            default_timeout=settings.timeout,
            max_body=settings.max_body,
            events=self.events,
        )
        self.chain = build_chain(
            self.client,
            replace(
                parts,
                jobs=AsyncJobs(self.store, clock, self.egress, wake=self.jobs.wake),
                rate_limit=RateLimit(self.store, settings.rate_limit),
            ),
        )
        self.body_reader = BodyReader(settings.max_body)
        self.control = make_control_app(self)
        self.access_log = AccessLog(None)
        #: Each host's breaker state as this sidecar last saw it change, for metrics.
        self.breaker_states: dict[str, str] = {}
        self.metrics = Metrics(
            queue_depth=self.job_depth, breaker_states=lambda: self.breaker_states
        )
        self.events.listen(self._on_event)
        # Heartbeats and change notices, in the background (SPEC §11).
        self.fleet = FleetService(
            self.store,
            {"routes": self.routes, client_keys.KIND: self.keys, secrets.KIND: self.secrets},
            listen=f"unix:{settings.unix}" if settings.unix else f"http://{settings.listen}",
            data_dir=settings.data_dir,
            started_at=self.started_at,
            jobs_leased=lambda: self.jobs.leased,
            clock=clock,
        )
        #: Told of every proxied request's outcome: events, records, stats,
        #: metrics, the fleet's request count.
        self.observers: list[Observer] = [
            self.events,
            StatsCounter(self.store, clock),
            self.metrics,
            Recorder(self.store, settings.record_bodies),
            self.fleet,
        ]

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["path"].startswith(CONTROL_PREFIX):
                await self.serve_control(scope, receive, send)
            else:
                await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        """Open the store and load the routes at start-up; close it all at shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.access_log = AccessLog.from_root()
                try:
                    await self.store.open()
                    await self.routes.start()
                    await self.keys.start()
                    await self.secrets.start()
                    self._refuse_exposed_without_keys()
                    for observer in self.observers:
                        await observer.start()
                    await self.control.startup()
                    # Last: a job's run needs the store and the routes.
                    self.jobs.start()
                except Exception as error:
                    # Tell the server, which then refuses to serve, rather
                    # than serving half-started.
                    reason = str(error) if isinstance(error, StartRefused) else repr(error)
                    await send({"type": "lifespan.startup.failed", "message": reason})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # First: jobs under way end (or stay leased) while all still works.
                await self.jobs.stop()
                await self.llm.drain()
                # Before the store closes: they flush what they still hold.
                for observer in self.observers:
                    await observer.stop()
                await self.routes.stop()
                await self.keys.stop()
                await self.secrets.stop()
                await self.client.aclose()
                await self.store.close()
                await self.control.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _on_event(self, event: Event) -> None:
        if event.reason is None:
            return
        if event.kind == JOB:
            self.metrics.job_finished(event.reason)
        elif event.kind == BREAKER and event.host is not None:
            states = self.breaker_states
            states.pop(event.host, None)  # re-inserted: the newest last
            states[event.host] = event.reason
            if len(states) > MAX_BREAKER_STATES:
                del states[next(iter(states))]

    def _refuse_exposed_without_keys(self) -> None:
        """SPEC §2.1: with no client key, the sidecar listens on loopback only."""
        if self.settings.unix is None and not is_loopback_listen(self.settings):
            if not self.keys.all():
                raise StartRefused(
                    f"refusing to listen on {self.settings.listen}, which other machines can"
                    " reach, while no client key exists: create one with `mirapi keys"
                    " create`, or listen on 127.0.0.1"
                )

    async def serve_control(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        """The sidecar's own endpoints, behind the same door as proxied requests."""
        try:
            inbound = read_request(scope)
            self.gate.admit(scope, inbound.first, key=self._control_needs_key(scope["path"]))
        except MirApiError as error:
            await send_response(_error_response(error, new_request_id()), send)
            return
        await self.control(scope, receive, send)  # type: ignore[arg-type]

    def _control_needs_key(self, path: str) -> bool:
        """Probes never; the dashboard's page and assets not once keys exist (it then
        asks for one; while none exists the door keeps them to loopback)."""
        if path in PROBES:
            return False
        return not (is_public_path(path) and self.keys.all())

    async def proxy(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        """One proxied request: parse at the edge, run the chain, stream the answer."""
        started = time.monotonic()
        arrived = self.clock.now()
        # Set by the door; a request it refuses is answered with a new one.
        request_id = ""
        exchange: Exchange | None = None
        client_id = LOCAL_CLIENT
        error_code: str | None = None
        try:
            inbound = read_request(scope)
            request_id = inbound.request_id
            first = inbound.first
            client_id = self.gate.admit(scope, first)
            body = await self.body_reader.read(receive, first.get("content-length"))
            exchange = inbound.exchange(
                body,
                self.settings.timeout,
                client_id=client_id,
                client_address=_address_of_client(scope),
                started=started,
            )
            response = await self.chain(exchange)
        except MirApiError as error:
            request_id = request_id or new_request_id()
            error_code = error.code
            response = _error_response(error, request_id, exchange)
        except ConnectionResetError:
            return
        except Exception:
            # A bug, not the client's doing: logged (redacted) with its
            # traceback, answered with the JSON error shape, never a bare 500.
            request_id = request_id or new_request_id()
            log.exception("unexpected error while proxying request %s", request_id)
            crash = MirApiError("the sidecar failed unexpectedly; see its log")
            error_code = crash.code
            response = _error_response(crash, request_id)
        await send_response(response, send)
        target = (exchange.answered_by or exchange.target) if exchange else ""
        outcome = Outcome(
            request_id=request_id,
            time=arrived,
            method=scope["method"],
            route=exchange.route.name if exchange and exchange.route else None,
            host=upstream_host(target),
            status=response.status,
            attempts=exchange.attempts if exchange else 0,
            rescue=exchange.rescue if exchange else None,
            latency=time.monotonic() - started,
            error=error_code,
            client_id=client_id,
            exchange=exchange,
        )
        self._log_access(outcome)
        for observer in self.observers:
            observer.observe(outcome)

    def _log_access(self, outcome: Outcome) -> None:
        line = {
            "request_id": outcome.request_id,
            "method": outcome.method,
            "route": outcome.route,
            "host": outcome.host,
            "status": outcome.status,
            "attempts": outcome.attempts,
            "rescue": outcome.rescue,
            "latency_ms": round(outcome.latency * 1000, 2),
        }
        if outcome.error is not None:
            line["error"] = outcome.error
        self.access_log.write(line)

    def health(self) -> dict[str, Any]:
        """What /_mirapi/healthz reports."""
        return {"status": "ok", "version": __version__, "pid": os.getpid()}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """What /_mirapi/readyz reports: degraded (not ready) while the store is lost."""
        store = self.store.health()
        body: dict[str, Any] = {"status": "ready" if store.ok else "degraded"}
        body["store"] = {"backend": store.backend, "ok": store.ok}
        if store.reason is not None:
            body["reason"] = store.reason
        return store.ok, body

    async def job_depth(self) -> int | None:
        """Jobs with work left, for readyz; None when the store cannot say soon."""
        try:
            async with asyncio.timeout(READYZ_STORE_TIMEOUT):
                return await self.store.job_depth()
        except Exception:
            return None


class StartRefused(Exception):
    """The sidecar must not start as configured; the message says why and what to do."""


def _error_response(
    error: MirApiError, request_id: str, exchange: Exchange | None = None
) -> Response:
    """The error answer: SPEC §2's JSON, or an LLM call's client's own error shape (§10)."""
    if exchange is not None and exchange.llm is not None:
        body = llm_error_body(
            exchange.llm.format, error.status, error.code, error.message, request_id
        )
    else:
        body = error_body(error, request_id)
    headers = error_headers(error, request_id)
    headers.append(("content-length", str(len(body))))
    if isinstance(error, BadRequestFraming):
        # The unread body's framing is in doubt: never reuse this connection.
        headers.append(("connection", "close"))
    return Response(error.status, headers, body)


def cache_entry_limit(settings: Settings) -> int:
    """The largest response the smart cache keeps: it must fit the cache and a body."""
    return min(settings.max_body, settings.cache_max_bytes)


def _address_of_client(scope: Scope) -> str:
    """The client's IP address ("" on a unix socket), for per-address rate limits."""
    client = scope.get("client")
    return str(client[0]) if client and client[0] else ""


def _wire(text: str) -> bytes:
    """A response header as bytes: the upstream's exactly as they came (read as
    latin-1); text beyond latin-1 that a stage added as UTF-8, never a crash."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


async def send_response(response: Response, send: ASGISend) -> None:
    """Send `response` over ASGI, streaming an upstream body as it arrives.

    A stream that breaks after the first byte is not ended cleanly: the
    exception propagates, and the server drops the connection, so the client
    sees an incomplete response (SPEC §2.9).
    """
    headers = [(_wire(n), _wire(v)) for n, v in response.headers]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if response.stream is None:
        await send({"type": "http.response.body", "body": response.body})
        return
    try:
        async for chunk in response.stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await response.discard()
    await send({"type": "http.response.body", "body": b""})


def create_app(settings: Settings, *, master_key: str | None = None) -> Sidecar:
    """The ASGI application for `settings`; `master_key` unlocks stored secrets (--unlock)."""
    return Sidecar(settings, master_key=master_key)
