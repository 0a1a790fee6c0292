"""Builds the sidecar's parts from its settings, and the order they start in.

The ASGI app (`sidecar/app.py`) only serves: it takes the `Wiring` built
here, proxies through its chain, and at start-up and shut-down walks its
`services`, started in order and stopped in reverse. A new part that holds
a task, a connection or a buffer adds a `Service` here, where it sits after
what it needs (it then stops before it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from sidecar.clock import SYSTEM_CLOCK, Clock
from sidecar.config import Settings, is_loopback_listen
from sidecar.exchange import Next
from sidecar.jobs.webhooks import CallbackSender
from sidecar.jobs.worker import JobWorkers
from sidecar.llm.budgets import BUDGETS_KIND, decode_limit
from sidecar.llm.meter import LlmMeter
from sidecar.llm.prices import PriceBook
from sidecar.observability.events import BREAKER, JOB, Event, EventLog
from sidecar.observability.fleet import FleetService
from sidecar.observability.metrics import Metrics, QueueDepth
from sidecar.observability.observe import Observer
from sidecar.observability.recorder import Recorder
from sidecar.observability.stats import StatsCounter
from sidecar.outbound.upstream import UpstreamClient
from sidecar.pipeline import Parts, build_chain, build_job_chain
from sidecar.record_table import RecordTable
from sidecar.routing.route_table import RouteTable
from sidecar.security import client_keys, secrets
from sidecar.security.client_keys import ClientKey
from sidecar.security.egress import Egress, EgressPolicy
from sidecar.security.gate import Gate
from sidecar.security.secrets import Secret
from sidecar.security.vault import Vault
from sidecar.stages.async_jobs import AsyncJobs
from sidecar.stages.inject_secrets import InjectSecrets
from sidecar.stages.rate_limit import RateLimit
from sidecar.store import store_for
from sidecar.store.base import Store

#: Hosts whose breaker state is shown (metrics, dashboard); the oldest
#: change is forgotten past it, as the store forgets breakers (MAX_BREAKERS).
MAX_BREAKER_STATES = 4096
#: readyz and the metrics wait this long for the job queue's depth, then leave it out.
JOB_DEPTH_TIMEOUT = 1.0


class StartRefused(Exception):
    """The sidecar must not start as configured; the message says why and what to do."""


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Service:
    """A part with work to do at start-up or shut-down."""

    name: str
    start: Callable[[], Awaitable[None]] = _nothing
    stop: Callable[[], Awaitable[None]] = _nothing


@dataclass(frozen=True)
class Wiring:
    """Every part of one sidecar, built and connected, not yet started."""

    settings: Settings
    clock: Clock
    started_at: float
    egress: Egress
    client: UpstreamClient
    store: Store
    events: EventLog
    routes: RouteTable
    keys: RecordTable[ClientKey]
    secrets: RecordTable[Secret]
    gate: Gate
    llm: LlmMeter
    callbacks: CallbackSender
    jobs: JobWorkers
    chain: Next
    metrics: Metrics
    #: Each host's breaker state as this sidecar last saw it change, for metrics.
    breaker_states: dict[str, str]
    fleet: FleetService
    #: Told of every proxied request's outcome: events, records, stats,
    #: metrics, the fleet's request count.
    observers: list[Observer]
    #: Started in this order, stopped in reverse.
    services: list[Service]


def wire(
    settings: Settings,
    *,
    egress: Egress | None = None,
    client: UpstreamClient | None = None,
    store: Store | None = None,
    clock: Clock = SYSTEM_CLOCK,
    master_key: str | None = None,
) -> Wiring:
    """Build the parts for `settings`; `master_key` unlocks stored secrets (--unlock)."""
    started_at = clock.now()
    egress = egress or EgressPolicy(
        allow_private=settings.allow_private, allow_hosts=settings.allow_hosts
    )
    client = client or UpstreamClient(egress)
    store = store or store_for(settings, clock)
    # Written in the background; stages, workers and outcomes feed it.
    events = EventLog(store)
    # Filled from the store at start-up, then kept fresh by polling it.
    routes = RouteTable(store)
    keys: RecordTable[ClientKey] = RecordTable(store, client_keys.KIND, client_keys.decode)
    # A unix socket cannot be reached by a browser: no Host to check there.
    gate = Gate(keys.all, settings.server_names, check_host=settings.unix is None)
    secret_table: RecordTable[Secret] = RecordTable(store, secrets.KIND, secrets.decode)
    # One vault for requests and jobs: one key cache, one cap on derivations.
    inject = InjectSecrets(secret_table.all, Vault(), master_key)
    # Which scopes have an LLM budget, kept fresh as the routes are: a call
    # under none of them is not reserved, so it pays no store round trip.
    budget_scopes: RecordTable[int] = RecordTable(store, BUDGETS_KIND, decode_limit)
    llm = LlmMeter(store, PriceBook(settings.llm), clock, budgeted=budget_scopes.all)
    # One set of parts for both chains: jobs and live requests share one
    # retry budget (a sick upstream's), one cache, one breaker per host.
    parts = Parts(
        store=store,
        max_body=settings.max_body,
        cache_entry_limit=cache_entry_limit(settings),
        clock=clock,
        routes=routes,
        secrets=inject,
        events=events,
        llm=llm,
    )
    job_chain = build_job_chain(client, parts)
    callbacks = CallbackSender(store, client, clock)
    jobs = JobWorkers(
        store,
        job_chain,
        callbacks,
        clock,
        workers=settings.job_workers,
        lease=settings.job_lease,
        default_timeout=settings.timeout,
        max_body=settings.max_body,
        events=events,
    )
    chain = build_chain(
        client,
        replace(
            parts,
            jobs=AsyncJobs(store, clock, egress, wake=jobs.wake),
            rate_limit=RateLimit(store, settings.rate_limit),
        ),
    )
    breaker_states: dict[str, str] = {}
    metrics = Metrics(queue_depth=job_depth_reader(store), breaker_states=lambda: breaker_states)
    events.listen(lambda event: note_event(event, metrics, breaker_states))
    # Heartbeats and change notices, in the background (SPEC §11).
    fleet = FleetService(
        store,
        {
            "routes": routes,
            client_keys.KIND: keys,
            secrets.KIND: secret_table,
            BUDGETS_KIND: budget_scopes,
        },
        listen=f"unix:{settings.unix}" if settings.unix else f"http://{settings.listen}",
        data_dir=settings.data_dir,
        started_at=started_at,
        jobs_leased=lambda: jobs.leased,
        clock=clock,
    )
    observers: list[Observer] = [
        events,
        StatsCounter(store, clock),
        metrics,
        Recorder(store, settings.record_bodies),
        fleet,
    ]

    async def refuse_exposed_without_keys() -> None:
        check_exposure(settings, keys)

    async def start_jobs() -> None:
        jobs.start()

    services = [
        Service("store", store.open, store.close),
        Service("upstream client", stop=client.aclose),
        Service("routes", routes.start, routes.stop),
        Service("client keys", keys.start, keys.stop),
        Service("secrets", secret_table.start, secret_table.stop),
        Service("llm budgets", budget_scopes.start, budget_scopes.stop),
        Service("exposure check", refuse_exposed_without_keys),
        # Stopped before the store closes: they flush what they still hold;
        # after the LLM meter and the jobs, whose ends are events and spend.
        *(Service(type(o).__name__, o.start, o.stop) for o in observers),
        Service("llm meter", stop=llm.drain),
        # Last: a job's run needs the store and the routes; first to stop,
        # so jobs under way end (or stay leased) while all still works.
        Service("job workers", start_jobs, jobs.stop),
    ]
    return Wiring(
        settings=settings,
        clock=clock,
        started_at=started_at,
        egress=egress,
        client=client,
        store=store,
        events=events,
        routes=routes,
        keys=keys,
        secrets=secret_table,
        gate=gate,
        llm=llm,
        callbacks=callbacks,
        jobs=jobs,
        chain=chain,
        metrics=metrics,
        breaker_states=breaker_states,
        fleet=fleet,
        observers=observers,
        services=services,
    )


def check_exposure(settings: Settings, keys: RecordTable[ClientKey]) -> None:
    """SPEC §2.1: with no client key, the sidecar listens on loopback only."""
    if settings.unix is None and not is_loopback_listen(settings):
        if not keys.all():
            raise StartRefused(
                f"refusing to listen on {settings.listen}, which other machines can"
                " reach, while no client key exists: create one with `mirapi keys"
                " create`, or listen on 127.0.0.1"
            )


def note_event(event: Event, metrics: Metrics, breaker_states: dict[str, str]) -> None:
    """Keep the metrics' job counts and each host's last breaker state."""
    if event.reason is None:
        return
    if event.kind == JOB:
        metrics.job_finished(event.reason)
    elif event.kind == BREAKER and event.host is not None:
        breaker_states.pop(event.host, None)  # re-inserted: the newest last
        breaker_states[event.host] = event.reason
        if len(breaker_states) > MAX_BREAKER_STATES:
            del breaker_states[next(iter(breaker_states))]


def job_depth_reader(store: Store) -> QueueDepth:
    """Jobs with work left, or None when the store cannot say soon."""

    async def job_depth() -> int | None:
        try:
            async with asyncio.timeout(JOB_DEPTH_TIMEOUT):
                return await store.job_depth()
        except Exception:
            return None

    return job_depth


def cache_entry_limit(settings: Settings) -> int:
    """The largest response the smart cache keeps: it must fit the cache and a body."""
    return min(settings.max_body, settings.cache_max_bytes)
