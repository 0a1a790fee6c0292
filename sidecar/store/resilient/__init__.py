"""Redis with a local fallback: losing Redis never fails a proxied request (SPEC §7).

`ResilientStore` answers from Redis while it answers and from the local
store (memory) while it does not (`switch.Switch`: healthy, degraded, back).
Each capability names its policy (`policies`), and that is all it needs:

falls back to local state (the request path goes on without Redis):
  - cache, breakers: start empty locally; what was written locally while
    degraded stays there (it is not copied to Redis on recovery);
  - rate buckets: each sidecar limits alone during an outage (a client may
    get up to one limit per sidecar);
  - log writes (events, request records, stats, from background flushers):
    kept locally, bounded, best effort; the shared log misses the outage;
  - idempotency, with its own refinement (`idempotency`): a key stays where
    its lock was taken.

shared only, StoreUnavailable while degraded (a 503, never a guess):
  - named records (routes, client keys, secrets): configuration every
    sidecar must agree on (a sidecar's RecordTable keeps what it last read);
  - jobs and the webhook secret: an accepted job must survive this process,
    so it is accepted only into Redis; workers find nothing to claim;
  - log reads (`events tail`, `replay`, `stats`): the shared state or an
    error, never the local part;
  - the fleet (heartbeats, change notices): a heartbeat kept locally would
    tell the CLI nothing; the sidecar's heartbeat and listener retry;
  - LLM budgets (budgets, reservations, spend): a budget checked against
    one sidecar's local state would not hold across sidecars, so an LLM
    call that needs a budget answers 503 while Redis is lost.

Adding a capability: put its Protocol in `FallsBack` or `SharedOnly` below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sidecar.store.breaker import BreakerStore
from sidecar.store.budgets import BudgetStore
from sidecar.store.cache import CacheStore
from sidecar.store.fleet import FleetStore
from sidecar.store.jobs import JobStore
from sidecar.store.logs import LogReader, LogWriter
from sidecar.store.rate import RateStore
from sidecar.store.records import NamedRecordStore
from sidecar.store.resilient.idempotency import LOCAL_KEY_LINGER, LocalFirstIdempotency, LocalLocks
from sidecar.store.resilient.policies import falls_back, shared_only

__all__ = ["LOCAL_KEY_LINGER", "FallsBack", "LocalLocks", "ResilientStore", "SharedOnly"]


class FallsBack(CacheStore, BreakerStore, RateStore, LogWriter, Protocol):
    """Answered by Redis while it answers, else (and until it answers again) locally."""


class SharedOnly(NamedRecordStore, JobStore, LogReader, FleetStore, BudgetStore, Protocol):
    """Answered by Redis alone: StoreUnavailable while it is lost."""


if TYPE_CHECKING:
    # The mixins are made at import time from the Protocols, so mypy is shown
    # the Protocols themselves: the same methods with the same types.
    _FallingBack = FallsBack
    _Shared = SharedOnly
else:
    _FallingBack = falls_back(FallsBack)
    _Shared = shared_only(SharedOnly)


class ResilientStore(LocalFirstIdempotency, _FallingBack, _Shared):
    """A `Store` on Redis that answers from `local` while Redis is unreachable."""
