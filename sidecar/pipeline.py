"""The chain: stages folded around a terminal, in one fixed order.

A stage is any `async (exchange, call_next) -> Response`. It passes
(`await call_next(exchange)`), answers (returns a response of its own) or
rejects (raises an error from sidecar.errors). `build` folds the ordered
stages around the terminal once, at start-up, the way Starlette builds its
middleware stack, so a request pays one call per stage and nothing more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from sidecar.clock import SYSTEM_CLOCK, Clock
from sidecar.exchange import Exchange, Next, Response
from sidecar.llm.meter import LlmMeter
from sidecar.observability.events import EventLog
from sidecar.outbound.retry_budget import RetryBudget
from sidecar.outbound.upstream import UpstreamClient
from sidecar.stages.async_jobs import NoAsyncJobs
from sidecar.stages.cascade import Cascade
from sidecar.stages.circuit_breaker import CircuitBreaker
from sidecar.stages.deadline import Deadline
from sidecar.stages.forward import Forward
from sidecar.stages.idempotency import Idempotency
from sidecar.stages.llm_attempt import LlmAttempt
from sidecar.stages.llm_budget import LlmBudget
from sidecar.stages.pci_guard import PciGuard
from sidecar.stages.race import Race
from sidecar.stages.respond import Respond
from sidecar.stages.retry import Retry
from sidecar.stages.routing import RouteLookup, Routing
from sidecar.stages.smart_cache import SmartCache
from sidecar.stages.strip_headers import StripHeaders
from sidecar.store.base import Store


class Stage(Protocol):
    """One step of the pipeline: pass, answer or reject."""

    def __call__(self, exchange: Exchange, call_next: Next) -> Awaitable[Response]: ...


def build(stages: Sequence[Stage], terminal: Next) -> Next:
    """One callable that runs `stages` in order, then `terminal`."""
    handler = terminal
    for stage in reversed(stages):
        handler = partial(stage, call_next=handler)
    return handler


@dataclass(frozen=True, slots=True, kw_only=True)
class Parts:
    """What the stages are built from: the sidecar's shared pieces.

    `routes` is where stored routes are looked up (a `RouteTable`); without
    it every route name is unknown (404 route_not_found). `jobs` is the
    AsyncJobs stage; without it (no workers) a callback request is refused.
    `secrets` (InjectSecrets) and `rate_limit` (RateLimit) are left out when
    None; `events` is told of breaker transitions. Pass one `budget` to both
    chains so jobs and requests share a sick upstream's retry budget.
    """

    store: Store
    max_body: int
    cache_entry_limit: int
    clock: Clock = SYSTEM_CLOCK
    budget: RetryBudget = field(default_factory=RetryBudget)
    routes: RouteLookup | None = None
    jobs: Stage | None = None
    secrets: Stage | None = None
    rate_limit: Stage | None = None
    events: EventLog | None = None
    #: Budgets and figures of LLM calls (SPEC §10); without it an LLM call
    #: is proxied as any other POST.
    llm: LlmMeter | None = None


def standard_stages(parts: Parts) -> list[Stage]:
    """The stages of SPEC §2 in their fixed order; each line says why it sits there.

    Auth (client keys) runs before the chain, at the sidecar's door (gate.py).
    """
    return [
        # Outermost: decorates whatever answer comes back, rescues included.
        Respond(parts.max_body),
        # Resolves the targets first: the computed idempotency key covers the URL.
        Routing(parts.routes),
        # Once the client and the route are known, before any work is spent.
        *_given(parts.rate_limit),
        # After routing (a route may switch it off), before idempotency, async
        # and the cache, so nothing of a blocked request is stored or queued.
        PciGuard(),
        # Before any upstream work: a duplicate waits here for the first's answer.
        Idempotency(parts.store, parts.clock, parts.max_body),
        # After idempotency, so a resubmitted job gets the first 202 again;
        # before resilience, which the job's workers run later.
        parts.jobs if parts.jobs is not None else NoAsyncJobs(),
        *resilience_stages(parts),
    ]


def resilience_stages(parts: Parts) -> list[Stage]:
    """The stages after Async (SPEC §2.6-2.7): what a synchronous call goes through."""
    return [
        # First, once per request and for jobs too: a locked secret fails fast,
        # before the cache or any upstream call (InjectSecrets).
        *_given(parts.secrets),
        # Outside the deadline, failover and retries: it rescues what they could not.
        SmartCache(parts.store, parts.clock, parts.cache_entry_limit),
        # One reservation for every attempt and endpoint; before any of them.
        *_given(LlmBudget(parts.llm) if parts.llm is not None else None),
        # Bounds everything after it: failover and every retry.
        Deadline(),
        # A race route's endpoints at once; each branch is a one-target cascade.
        Race(),
        # Failover wraps retries: the next target only once one is spent.
        Cascade(),
        # Retries one target; every attempt goes through the stages below.
        Retry(parts.clock, parts.budget),
        # Inside the retry loop, so an opening circuit stops further retries.
        CircuitBreaker(parts.store, parts.clock, events=parts.events),
        # The upstream never sees a proxy header.
        StripHeaders(),
        # Per attempt, last before the upstream: an LLM call's body for this
        # endpoint, and its answer judged before retry and failover see it.
        *_given(LlmAttempt(parts.llm, parts.max_body) if parts.llm is not None else None),
    ]


def build_chain(client: UpstreamClient, parts: Parts) -> Next:
    """The whole pipeline, ending in one upstream attempt."""
    return build(standard_stages(parts), Forward(client))


def build_job_chain(client: UpstreamClient, parts: Parts) -> Next:
    """What a job's run goes through: a synchronous call's chain minus idempotency and async.

    Respond stays (X-Extract applies to the outcome); the job itself is the
    idempotency (its key is set on the exchange), and it is already async.
    No rate limit: the request was counted when it was accepted.
    """
    stages: list[Stage] = [
        Respond(parts.max_body),
        Routing(parts.routes),
        *resilience_stages(parts),
    ]
    return build(stages, Forward(client))


def _given(stage: Stage | None) -> list[Stage]:
    return [] if stage is None else [stage]
