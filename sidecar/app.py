"""The sidecar's ASGI application: a lean proxy path in front of Quart.

Proxied requests are dispatched straight to the pipeline by a small ASGI
callable: Quart's per-request machinery costs about 0.5 ms on Hypercorn
(PERFORMANCE.md), more than the whole budget of the hot path. Quart keeps
serving the sidecar's own endpoints under `/_mirapi/`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from sidecar import __version__
from sidecar.clock import SYSTEM_CLOCK, Clock
from sidecar.config import Settings
from sidecar.control import make_control_app
from sidecar.dashboard import is_public_path
from sidecar.errors import (
    BadRequestFraming,
    MirApiError,
    PayloadTooLarge,
    error_body,
    error_headers,
)
from sidecar.exchange import Exchange, Response, new_request_id
from sidecar.headers import upstream_host
from sidecar.llm.errors import error_body as llm_error_body
from sidecar.observability.logging import AccessLog
from sidecar.observability.observe import Outcome
from sidecar.outbound.upstream import UpstreamClient
from sidecar.security.egress import Egress
from sidecar.security.gate import LOCAL_CLIENT, read_request
from sidecar.store.base import Store
from sidecar.wiring import Service, StartRefused, job_depth_reader, wire

Scope = dict[str, Any]
ASGIReceive = Any
ASGISend = Any

CONTROL_PREFIX = "/_mirapi/"
#: Control endpoints open to probes without a client key (they tell nothing private).
PROBES = frozenset({"/_mirapi/healthz", "/_mirapi/livez", "/_mirapi/readyz"})

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
    """The ASGI callable Hypercorn serves: the proxy, the control endpoints and
    the lifespan. Its parts are built by `sidecar.wiring.wire`."""

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
        wiring = wire(
            settings, egress=egress, client=client, store=store, clock=clock, master_key=master_key
        )
        self.wiring = wiring
        # Plain attributes, not properties: the proxy reads them on every request,
        # and tests, the control endpoints and the dashboard read the rest.
        self.settings = settings
        self.clock = clock
        self.started_at = wiring.started_at
        self.egress = wiring.egress
        self.client = wiring.client
        self.store = wiring.store
        self.events = wiring.events
        self.routes = wiring.routes
        self.keys = wiring.keys
        self.gate = wiring.gate
        self.secrets = wiring.secrets
        self.llm = wiring.llm
        self.callbacks = wiring.callbacks
        self.jobs = wiring.jobs
        self.chain = wiring.chain
        self.metrics = wiring.metrics
        self.breaker_states = wiring.breaker_states
        self.fleet = wiring.fleet
        self.observers = wiring.observers
        self.body_reader = BodyReader(settings.max_body)
        self.access_log = AccessLog(None)
        self.control = make_control_app(self)
        self._job_depth = job_depth_reader(self.store)
        #: Started in order, stopped in reverse; the control app last (its
        #: dashboard feeds read the rest).
        self.services: list[Service] = [
            *wiring.services,
            Service("control endpoints", self.control.startup, self.control.shutdown),
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
        """Start the services in order at start-up; stop them in reverse at shut-down."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.access_log = AccessLog.from_root()
                try:
                    for service in self.services:
                        await service.start()
                except Exception as error:
                    # Tell the server, which then refuses to serve, rather
                    # than serving half-started.
                    reason = str(error) if isinstance(error, StartRefused) else repr(error)
                    await send({"type": "lifespan.startup.failed", "message": reason})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for service in reversed(self.services):
                    await service.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

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
        return await self._job_depth()


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
