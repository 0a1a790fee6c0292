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
from typing import Any

from sidecar import __version__
from sidecar.clock import SYSTEM_CLOCK, Clock
from sidecar.config import Settings
from sidecar.control import make_control_app
from sidecar.egress import Egress, EgressPolicy
from sidecar.errors import MirApiError, PayloadTooLarge, error_body, error_headers
from sidecar.exchange import Exchange, Response, new_request_id
from sidecar.jobs.webhooks import CallbackSender
from sidecar.jobs.worker import JobWorkers
from sidecar.logging import AccessLog
from sidecar.pipeline import build_chain, build_job_chain
from sidecar.policy import parse_policy
from sidecar.retry_budget import RetryBudget
from sidecar.route_table import RouteTable
from sidecar.stages.async_jobs import AsyncJobs
from sidecar.store import store_for
from sidecar.store.base import Store
from sidecar.upstream import UpstreamClient

Scope = dict[str, Any]
ASGIReceive = Any
ASGISend = Any

CONTROL_PREFIX = "/_mirapi/"
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


def _decode_headers(raw: list[tuple[bytes, bytes]]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Headers in order, and a first-value-wins map for the policy parser."""
    headers = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in raw]
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name, value)
    return headers, first


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
    ) -> None:
        self.settings = settings
        self.started_at = clock.now()
        self.egress = egress or EgressPolicy(
            allow_private=settings.allow_private, allow_hosts=settings.allow_hosts
        )
        self.client = client or UpstreamClient(self.egress)
        self.store = store or store_for(settings, clock)
        # Filled from the store at start-up, then kept fresh by polling it.
        self.routes = RouteTable(self.store)
        # One budget: background jobs and live requests share a sick upstream's.
        budget = RetryBudget()
        job_chain = build_job_chain(
            self.client,
            self.store,
            max_body=settings.max_body,
            cache_entry_limit=cache_entry_limit(settings),
            clock=clock,
            routes=self.routes,
            budget=budget,
        )
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
        )
        self.chain = build_chain(
            self.client,
            self.store,
            max_body=settings.max_body,
            cache_entry_limit=cache_entry_limit(settings),
            clock=clock,
            routes=self.routes,
            jobs=AsyncJobs(self.store, clock, self.egress, wake=self.jobs.wake),
            budget=budget,
        )
        self.body_reader = BodyReader(settings.max_body)
        self.control = make_control_app(self)
        self.access_log = AccessLog(None)

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["path"].startswith(CONTROL_PREFIX):
                await self.control(scope, receive, send)  # type: ignore[arg-type]
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
                    await self.control.startup()
                    # Last: a job's run needs the store and the routes.
                    self.jobs.start()
                except Exception as error:
                    # Tell the server, which then refuses to serve, rather
                    # than serving half-started.
                    await send({"type": "lifespan.startup.failed", "message": repr(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # First: jobs under way end (or stay leased) while all still works.
                await self.jobs.stop()
                await self.routes.stop()
                await self.client.aclose()
                await self.store.close()
                await self.control.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def proxy(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        """One proxied request: parse at the edge, run the chain, stream the answer."""
        started = time.monotonic()
        headers, first = _decode_headers(scope["headers"])
        request_id = first.get("x-request-id") or new_request_id()
        exchange: Exchange | None = None
        try:
            body = await self.body_reader.read(receive, first.get("content-length"))
            policy = parse_policy(first, self.settings.timeout)
            raw_path = scope.get("raw_path") or scope["path"].encode()
            exchange = Exchange(
                method=scope["method"],
                path=raw_path.decode("latin-1"),
                query=scope["query_string"].decode("latin-1"),
                headers=headers,
                body=body,
                policy=policy,
                request_id=request_id,
                started=started,
            )
            response = await self.chain(exchange)
        except MirApiError as error:
            response = Response(
                error.status, error_headers(error, request_id), error_body(error, request_id)
            )
        except ConnectionResetError:
            return
        except Exception:
            # A bug, not the client's doing: logged (redacted) with its
            # traceback, answered with the JSON error shape, never a bare 500.
            log.exception("unexpected error while proxying request %s", request_id)
            crash = MirApiError("the sidecar failed unexpectedly; see its log")
            response = Response(
                crash.status, error_headers(crash, request_id), error_body(crash, request_id)
            )
        await send_response(response, send)
        self._log_access(scope, exchange, response.status, started, request_id)

    def _log_access(
        self,
        scope: Scope,
        exchange: Exchange | None,
        status: int,
        started: float,
        request_id: str,
    ) -> None:
        target = (exchange.answered_by or exchange.target) if exchange else ""
        line = {
            "request_id": request_id,
            "method": scope["method"],
            "host": _host_of(target),
            "status": status,
            "attempts": exchange.attempts if exchange else 0,
            "rescue": exchange.rescue if exchange else None,
            "latency_ms": round((time.monotonic() - started) * 1000, 2),
        }
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


def cache_entry_limit(settings: Settings) -> int:
    """The largest response the smart cache keeps: it must fit the cache and a body."""
    return min(settings.max_body, settings.cache_max_bytes)


def _host_of(url: str) -> str:
    """The host[:port] of `url` only: paths and queries may hold personal data."""
    rest = url.partition("://")[2]
    return rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]


async def send_response(response: Response, send: ASGISend) -> None:
    """Send `response` over ASGI, streaming an upstream body as it arrives.

    A stream that breaks after the first byte is not ended cleanly: the
    exception propagates, and the server drops the connection, so the client
    sees an incomplete response (SPEC §2.9).
    """
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in response.headers]
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


def create_app(settings: Settings) -> Sidecar:
    """The ASGI application for `settings`."""
    return Sidecar(settings)
