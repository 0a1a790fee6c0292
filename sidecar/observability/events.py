"""Events: what the sidecar rescued, refused or saw fail, in a bounded log (SPEC §8).

An `Event` is one line of that log: when, what kind, why, and which request,
route and upstream host. The kinds:

    rescue          a request answered by a rescue   reason: retry | cache | failover
                                                             | cascade_fallback
    breaker         a circuit breaker changed state  reason: open | half_open | closed,
                                                     detail: "closed->open", ...
    pci_block       a card number refused            reason: pci_card_number
    job             a background job finished        reason: succeeded | failed | cancelled,
                                                     detail: the job id
    egress_denied   a target the policy forbids      reason: egress_denied
    upstream_error  the upstream failed the request  reason: upstream_unreachable
                                                             | upstream_timeout
                                                             | deadline_exceeded
                                                             | server_error (a 5xx)
    llm_budget      an LLM call refused by a budget  reason: llm_budget_exhausted
                                                             | llm_budget_exceeded
                                                             | llm_price_unknown
    llm_failover    an LLM call answered by a later  reason: cascade_fallback | failover
                    endpoint                          detail: the provider that answered
    llm_stream_cut  a committed LLM stream failed    reason: llm_stream_cut
                    before its end (the client got an in-band error)
    llm_price_unknown  an LLM call whose model has   reason: llm_price_unknown,
                    no price (its cost is unknown)    detail: provider/model
    llm_untranslatable  an endpoint skipped: the    reason: the provider skipped,
                    call cannot be expressed there    detail: the field (n, logprobs, ...)

What is never in an event: a request or response body, a URL path or query
(hosts only: paths and query values may hold personal data), a header, a
credential. `detail` is short text the sidecar wrote itself: an error code,
a breaker transition, a job id.

`EventLog` is the sidecar's writer. It observes every request's `Outcome`
and turns the few that matter into events; other parts (the breaker, the
job workers) `emit` theirs. Both are synchronous and never raise: events go
through a `BatchWriter` (prompt: a write starts as soon as one is queued)
into `Store.events_add`, so a slow or lost store
never slows or fails the request that caused one. The store keeps the
newest EVENTS_MAX of them (embedded: a SQLite ring; Redis: a capped stream
every sidecar sharing it appends to), and `mirapi events tail` reads them
back with `events_read`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from sidecar.observability.observe import BatchWriter, Outcome

log = logging.getLogger("mirapi.events")

RESCUE = "rescue"
BREAKER = "breaker"
PCI_BLOCK = "pci_block"
JOB = "job"
EGRESS_DENIED = "egress_denied"
UPSTREAM_ERROR = "upstream_error"
LLM_BUDGET = "llm_budget"
LLM_FAILOVER = "llm_failover"
LLM_STREAM_CUT = "llm_stream_cut"
LLM_PRICE_UNKNOWN = "llm_price_unknown"
LLM_UNTRANSLATABLE = "llm_untranslatable"
KINDS = (
    RESCUE,
    BREAKER,
    PCI_BLOCK,
    JOB,
    EGRESS_DENIED,
    UPSTREAM_ERROR,
    LLM_BUDGET,
    LLM_FAILOVER,
    LLM_STREAM_CUT,
    LLM_PRICE_UNKNOWN,
    LLM_UNTRANSLATABLE,
)
#: The sidecar's refusals of an LLM call by its budgets (SPEC §10).
LLM_BUDGET_CODES = frozenset({"llm_budget_exhausted", "llm_budget_exceeded", "llm_price_unknown"})

#: The sidecar's own error codes that mean the upstream failed the request.
#: (`circuit_open` is not one: no call was made; the breaker event says why.)
UPSTREAM_ERROR_CODES = frozenset({"upstream_unreachable", "upstream_timeout", "deadline_exceeded"})
#: The reason of an upstream_error event for a 5xx the upstream sent itself.
SERVER_ERROR = "server_error"

#: `detail` is a code or a transition, never prose: anything longer is cut.
DETAIL_MAX = 120
#: Batches written at most this often; the queue holds this many at most.
WRITE_INTERVAL = 0.25
QUEUE_LIMIT = 10_000

#: The fields, in the order `public_view` and the CLI show them.
FIELDS = (
    "time",
    "kind",
    "reason",
    "request_id",
    "route",
    "host",
    "status",
    "attempts",
    "latency_ms",
    "detail",
)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the event log. Never holds a body, a path, a header or a credential."""

    #: Wall-clock seconds (unix time).
    time: float
    kind: str
    reason: str | None = None
    request_id: str | None = None
    route: str | None = None
    #: host[:port] only.
    host: str | None = None
    status: int | None = None
    attempts: int | None = None
    latency_ms: float | None = None
    detail: str | None = None

    def encode(self) -> bytes:
        """Compact JSON; fields that are None are left out."""
        data = {name: getattr(self, name) for name in FIELDS}
        return orjson.dumps({key: value for key, value in data.items() if value is not None})

    @classmethod
    def decode(cls, data: bytes) -> Event:
        """The inverse of `encode`; ValueError when `data` is not an event."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise ValueError("not JSON") from error
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        try:
            return cls(
                time=float(raw["time"]),
                kind=str(raw["kind"]),
                reason=_text(raw.get("reason")),
                request_id=_text(raw.get("request_id")),
                route=_text(raw.get("route")),
                host=_text(raw.get("host")),
                status=_integer(raw.get("status")),
                attempts=_integer(raw.get("attempts")),
                latency_ms=_number(raw.get("latency_ms")),
                detail=_text(raw.get("detail")),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"a field is missing or of the wrong type ({error})") from None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _integer(value: Any) -> int | None:
    return None if value is None else int(value)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def iso_time(at: float) -> str:
    """Unix seconds as ISO 8601 UTC to the millisecond: 2025-01-31T12:00:00.250Z."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public_view(event: Event) -> dict[str, Any]:
    """The event as `events tail --json` prints it: every field, time in ISO 8601 UTC."""
    view: dict[str, Any] = {name: getattr(event, name) for name in FIELDS}
    view["time"] = iso_time(event.time)
    return view


def short(detail: str) -> str:
    """`detail` cut to DETAIL_MAX characters."""
    return detail if len(detail) <= DETAIL_MAX else detail[: DETAIL_MAX - 1] + "…"


def event_for(outcome: Outcome) -> Event | None:
    """The event one proxied request makes, if any (most make none).

    A PCI block or an egress denial first (the request went nowhere), then
    a rescue, then an upstream failure: the sidecar's own 502/504, or a 5xx
    the upstream sent that no rescue could turn around.
    """
    if outcome.error == "pci_card_number":
        kind, reason = PCI_BLOCK, outcome.error
    elif outcome.error in LLM_BUDGET_CODES:
        kind, reason = LLM_BUDGET, outcome.error
    elif outcome.error == "egress_denied":
        kind, reason = EGRESS_DENIED, outcome.error
    elif outcome.rescue is not None:
        kind, reason = RESCUE, outcome.rescue
    elif outcome.error in UPSTREAM_ERROR_CODES:
        kind, reason = UPSTREAM_ERROR, outcome.error
    elif outcome.error is None and outcome.status >= 500:
        kind, reason = UPSTREAM_ERROR, SERVER_ERROR
    else:
        return None
    return Event(
        time=outcome.time,
        kind=kind,
        reason=reason,
        request_id=outcome.request_id,
        route=outcome.route,
        host=outcome.host or None,
        status=outcome.status,
        attempts=outcome.attempts,
        latency_ms=round(outcome.latency * 1000, 2),
    )


def llm_events_for(outcome: Outcome) -> list[Event]:
    """The events an LLM call's answer makes beside `event_for`'s: failover, cut, no price."""
    exchange = outcome.exchange
    call = exchange.llm if exchange is not None else None
    if call is None:
        return []

    def made(kind: str, reason: str, detail: str | None = None) -> Event:
        return Event(
            time=outcome.time,
            kind=kind,
            reason=reason,
            request_id=outcome.request_id,
            route=outcome.route,
            host=outcome.host or None,
            status=outcome.status,
            attempts=outcome.attempts,
            detail=short(detail) if detail else None,
        )

    found = []
    if outcome.rescue in ("cascade_fallback", "failover"):
        found.append(made(LLM_FAILOVER, outcome.rescue, call.provider))
    if call.cut:
        found.append(made(LLM_STREAM_CUT, LLM_STREAM_CUT))
    for provider, missing in call.untranslatable:
        found.append(made(LLM_UNTRANSLATABLE, provider, missing))
    if call.price_unknown and outcome.error is None:
        found.append(made(LLM_PRICE_UNKNOWN, LLM_PRICE_UNKNOWN, f"{call.provider}/{call.model}"))
    return found


class EventStore(Protocol):
    """What the event log needs of the store (`sidecar.store.base.Store` has it)."""

    async def events_add(self, items: Sequence[bytes]) -> None: ...


class EventLog:
    """The sidecar's event writer: an Observer of outcomes, and `emit` for the rest.

    `observe` and `emit` only queue the encoded event; a background
    BatchWriter hands the queue to `store.events_add` every WRITE_INTERVAL
    seconds. A full queue drops new events (counted in `dropped`).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        interval: float = WRITE_INTERVAL,
        limit: int = QUEUE_LIMIT,
    ) -> None:
        # Written promptly: an event is rare, and read right after the
        # request that made it (`curl ...; mirapi events tail`).
        self._writer: BatchWriter[bytes] = BatchWriter(
            "events", store.events_add, interval=interval, limit=limit, prompt=True
        )
        self._listeners: list[Callable[[Event], None]] = []

    def listen(self, listener: Callable[[Event], None]) -> None:
        """Call `listener` with every event emitted (metrics count job outcomes this way)."""
        self._listeners.append(listener)

    @property
    def dropped(self) -> int:
        """Events lost because the queue was full."""
        return self._writer.dropped

    def observe(self, outcome: Outcome) -> None:
        """Queue the event `outcome` makes, if any. Never raises."""
        try:
            event = event_for(outcome)
        except Exception:
            log.exception("could not make an event of request %s", outcome.request_id)
            return
        if event is not None:
            self.emit(event)
        if outcome.exchange is not None and outcome.exchange.llm is not None:
            try:
                for made in llm_events_for(outcome):
                    self.emit(made)
            except Exception:
                log.exception("could not make the LLM events of request %s", outcome.request_id)

    def emit(self, event: Event) -> None:
        """Queue `event`. Never blocks, never raises."""
        try:
            data = event.encode()
        except Exception:
            # The type only: the message could quote a field.
            log.warning("an event of kind %s could not be encoded; dropped", event.kind)
            return
        self._writer.add(data)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("an event listener failed")

    async def start(self) -> None:
        await self._writer.start()

    async def stop(self) -> None:
        """Stop writing in the background, after writing what is queued."""
        await self._writer.stop()

    async def flush(self) -> None:
        """Write what is queued now (tests; the background task does it otherwise)."""
        await self._writer.flush()
