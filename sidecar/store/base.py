"""The store interface: the state the sidecar shares across requests and sidecars.

`Store` is the composition of small capability interfaces, one module each
(the way the `limits` package splits storage); a caller depends on the one
it uses:

    cache.CacheStore              smart cache (request path)
    breaker.BreakerStore          circuit breakers (request path)
    idempotency.IdempotencyStore  idempotency locks and replay (request path)
    rate.RateStore                rate limit buckets (request path)
    records.NamedRecordStore      routes, client keys, secrets (durable)
    jobs.JobStore                 async jobs, the webhook secret (durable)
    logs.LogWriter / LogReader    events, request records, stats
    fleet.FleetStore              heartbeats and change notices (SPEC §11)
    budgets.BudgetStore           LLM budgets, reservations and spend (SPEC §10)

Backends (SPEC §7), each a package with a module per capability: `memory`
(one process), `embedded` (memory for the hot path, SQLite in the data dir
for what must survive a restart) and `redis` (one state for many sidecars).
`resilient` wraps Redis with a local fallback so that losing Redis never
fails a proxied request. Every backend passes the contract suite in
`tests/sidecar/store/`, one test module per capability.

Time is injected: a backend is built with a `Clock` and reads wall-clock
seconds from `clock.now()` for every expiry, so tests move a fake clock
instead of sleeping, on both backends alike (Redis scripts get `now` as an
argument). Backends may also set a server-side expiry a little past the
logical one, for garbage collection.

A backend raises `StoreUnavailable` (sidecar.errors) when it cannot answer;
it never lets a redis or sqlite exception escape.

The names of every capability module are importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sidecar.store.breaker import Admission, BreakerState, BreakerStatus, BreakerStore
from sidecar.store.budgets import Budget, BudgetStore, Refusal, SpendRow
from sidecar.store.cache import CacheStore, Headers, StoredResponse
from sidecar.store.fleet import FleetStore, Heartbeat
from sidecar.store.idempotency import (
    Claim,
    ClaimOutcome,
    IdempotencyStore,
    WaitOutcome,
    WaitResult,
)
from sidecar.store.jobs import JobStore
from sidecar.store.logs import (
    EVENTS_MAX,
    REQUESTS_MAX,
    STATS_KEEP_HOURS,
    LogReader,
    LogStore,
    LogWriter,
    check_counts,
    parse_seq_cursor,
    stats_window,
)
from sidecar.store.rate import RATE_EPSILON, RateDecision, RateStore, check_rate, take_token
from sidecar.store.records import RECORD_KINDS, NamedRecordStore

__all__ = [
    "EVENTS_MAX",
    "RATE_EPSILON",
    "RECORD_KINDS",
    "REQUESTS_MAX",
    "STATS_KEEP_HOURS",
    "Admission",
    "BreakerState",
    "BreakerStatus",
    "BreakerStore",
    "Budget",
    "BudgetStore",
    "CacheStore",
    "Claim",
    "ClaimOutcome",
    "FleetStore",
    "Headers",
    "Heartbeat",
    "IdempotencyStore",
    "JobStore",
    "Lifecycle",
    "LogReader",
    "LogStore",
    "LogWriter",
    "NamedRecordStore",
    "RateDecision",
    "RateStore",
    "Refusal",
    "SpendRow",
    "Store",
    "StoreHealth",
    "StoredResponse",
    "WaitOutcome",
    "WaitResult",
    "check_counts",
    "check_rate",
    "parse_seq_cursor",
    "stats_window",
    "take_token",
]


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What /_mirapi/readyz reports about the store."""

    backend: str
    ok: bool = True
    #: Why the store is degraded, safe to show (never a URL with a password).
    reason: str | None = None


class Lifecycle(Protocol):
    """Opening, closing and health: what the sidecar and the CLI do with any store."""

    async def open(self) -> None:
        """Connect, create tables, load what survives a restart."""

    async def close(self) -> None:
        """Flush pending writes and release connections."""

    def health(self) -> StoreHealth:
        """The store's state as last seen; never blocks."""


class Store(
    Lifecycle,
    CacheStore,
    BreakerStore,
    IdempotencyStore,
    RateStore,
    NamedRecordStore,
    JobStore,
    LogWriter,
    LogReader,
    FleetStore,
    BudgetStore,
    Protocol,
):
    """Every capability: what a backend implements, and what wiring hands out."""
