"""The fleet capability: who runs on this store, and change notices (SPEC §11).

Each sidecar heartbeats a `Heartbeat` every few seconds (`fleet_put`); the
CLI lists them (`fleet_list`, `mirapi sidecar list`) and, after changing a
route, key or secret, waits until every live one runs the new version.
A heartbeat is kept `keep` seconds past its own `last_seen`, then it is no
longer listed (a sidecar that stops cleanly removes its own at once); one
silent for a while but still kept is *gone*, a judgement the reader makes
(`is_gone`), not the store.

A change notice (`fleet_notify`) tells every sidecar listening on the same
store (`fleet_listen`) that a kind of record changed, so it reloads at once
rather than at its next poll. Redis carries it by pub/sub; the memory and
embedded stores reach the listeners of this process only (the CLI signals
the data dir's sidecar itself). A notice is a hint: a missed one costs a
poll interval, never correctness.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

#: A sidecar silent this long is listed as gone (SPEC §11).
GONE_AFTER = 15.0
#: A heartbeat is no longer listed this long after its last_seen.
KEEP = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """What a sidecar says of itself, every few seconds."""

    #: Random per process and start: a restarted sidecar is a new entry.
    id: str
    host: str
    pid: int
    #: Its address as clients use it ("http://127.0.0.1:8742", "unix:/path").
    listen: str
    version: str
    #: Wall-clock seconds.
    started_at: float
    last_seen: float
    #: The record version it serves, per kind ("routes", "keys", "secrets").
    records: Mapping[str, int] = field(default_factory=dict)
    requests: int = 0
    jobs_leased: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "listen": self.listen,
            "version": self.version,
            "started_at": self.started_at,
            "last_seen": self.last_seen,
            "records": dict(self.records),
            "requests": self.requests,
            "jobs_leased": self.jobs_leased,
        }


def encode(beat: Heartbeat) -> bytes:
    return orjson.dumps(beat.as_dict())


def decode(data: bytes) -> Heartbeat:
    """The inverse of `encode`; ValueError for anything else."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    records = raw.get("records", {})
    if not isinstance(records, dict) or not all(
        isinstance(k, str) and _is_int(v) for k, v in records.items()
    ):
        raise ValueError("records is not a map of versions")
    beat = Heartbeat(
        id=_typed(raw, "id", str),
        host=_typed(raw, "host", str),
        pid=_typed(raw, "pid", int),
        listen=_typed(raw, "listen", str),
        version=_typed(raw, "version", str),
        started_at=float(_number(raw, "started_at")),
        last_seen=float(_number(raw, "last_seen")),
        records=records,
        requests=_typed(raw, "requests", int),
        jobs_leased=_typed(raw, "jobs_leased", int),
    )
    return beat


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _typed(raw: dict[str, Any], name: str, kind: type) -> Any:
    value = raw.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} is not a {kind.__name__}")
    return value


def _number(raw: dict[str, Any], name: str) -> float:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} is not a finite number")
    return float(value)


def is_gone(beat: Heartbeat, now: float, gone_after: float = GONE_AFTER) -> bool:
    """True when `beat`'s sidecar has been silent `gone_after` seconds or more."""
    return now - beat.last_seen >= gone_after


#: Called with the kind of record that changed.
NoticeHandler = Callable[[str], None]


class FleetStore(Protocol):
    """Shared only: StoreUnavailable while Redis is lost (a heartbeat kept locally
    would tell the CLI nothing)."""

    async def fleet_put(self, beat: Heartbeat, keep: float) -> None:
        """Store `beat` (replacing this sidecar's last), listed until last_seen + keep."""

    async def fleet_remove(self, sidecar_id: str) -> None:
        """Forget a sidecar (it stopped cleanly); nothing when it is not listed."""

    async def fleet_list(self) -> list[Heartbeat]:
        """Every heartbeat still kept (now < last_seen + keep), by id."""

    async def fleet_notify(self, kind: str) -> int:
        """Tell every listener on this store that records of `kind` changed; how many
        listeners the store reached (Redis: subscribers on any host)."""

    async def fleet_listen(self, handler: NoticeHandler) -> None:
        """Call `handler(kind)` for each notice until cancelled; StoreUnavailable when
        the store is lost (listen again later)."""
