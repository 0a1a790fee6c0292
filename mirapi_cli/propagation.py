"""A change is in force when the command returns (SPEC §11).

A command that changes routes, keys or secrets runs its write through
`change`: once the write is in the store it

  1. reads the new version of the kind (the version the write made, or a
     later one: versions only grow),
  2. sends a change notice: Redis pub/sub for a Redis store (every sidecar
     on the server listens); for the embedded store SIGUSR1 to the data
     dir's sidecar, once `daemon.identify` has shown its pid is still that
     sidecar (never a pid some other program got since),
  3. waits, up to ACK_TIMEOUT, until every live sidecar's heartbeat says it
     serves that version or a later one (sidecar/observability/fleet.py beats at once
     after reloading).

The command then says how many did and names those that did not. Those
are not an error (exit 0): the change is stored, and they take it at their
next poll. A store that cannot be opened, or refuses the write, is an
error before anything is written (store_access.with_store).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mirapi_cli.options import load_settings
from mirapi_cli.store_access import with_store

if TYPE_CHECKING:
    from sidecar.store.base import Store
    from sidecar.store.fleet import FleetStore, Heartbeat

T = TypeVar("T")

#: How long a command waits for every live sidecar to take its change.
ACK_TIMEOUT = 5.0
#: How often it looks at the heartbeats meanwhile.
ACK_POLL = 0.05


@dataclass(frozen=True, slots=True)
class InForce:
    """Which live sidecars took a change."""

    live: Sequence[Heartbeat] = ()
    acknowledged: Sequence[Heartbeat] = ()
    #: Why the sidecars could not be asked (the store went away after the write).
    unknown: str | None = None
    waited: float = ACK_TIMEOUT

    @property
    def missing(self) -> list[Heartbeat]:
        taken = {beat.id for beat in self.acknowledged}
        return [beat for beat in self.live if beat.id not in taken]

    def as_json(self) -> dict[str, Any]:
        """`"sidecars"` in a command's --json answer."""
        data: dict[str, Any] = {"live": len(self.live), "acknowledged": len(self.acknowledged)}
        data["not_acknowledged"] = [beat.id for beat in self.missing]
        if self.unknown is not None:
            data["unknown"] = self.unknown
        return data

    def summary(self) -> str:
        """`in force on 3 sidecars`, for the command's message."""
        live, taken = len(self.live), len(self.acknowledged)
        if self.unknown is not None:
            return "stored (whether sidecars took it could not be checked)"
        if live == 0:
            return "no sidecar runs on this store (one that starts loads it)"
        if taken == live:
            return f"in force on {_count(taken, 'sidecar')}"
        return f"in force on {taken} of {_count(live, 'sidecar')}"

    def sentence(self) -> str:
        """The summary as a line of its own: `In force on 3 sidecars.`"""
        said = self.summary()
        return f"{said[0].upper()}{said[1:]}."

    def warnings(self) -> list[str]:
        """What stderr must say about sidecars that did not take the change."""
        if self.unknown is not None:
            return [
                "mirapi: warning: the change is stored, but the sidecars could not be asked"
                f" whether they took it: {self.unknown}"
            ]
        lines = [
            f"mirapi: warning: not in force within {self.waited:g} s on sidecar {beat.id}"
            f" ({beat.host}, pid {beat.pid}, {beat.listen})"
            for beat in self.missing
        ]
        if lines:
            lines.append(
                "mirapi: the change is stored: those sidecars take it when they next read the"
                " store (check them with `mirapi sidecar list`)"
            )
        return lines


def change(
    data_dir: Path | None,
    config: Path | None,
    redis: str | None,
    kinds: Iterable[str],
    operation: Callable[[Store], Awaitable[T]],
    *,
    changed: Callable[[T], bool] = bool,
) -> tuple[T, InForce | None]:
    """Run `operation` on the store; when `changed(result)`, wait until it is in force.

    The InForce is None when nothing was changed (nothing to wait for).
    """
    settings = load_settings(data_dir, config, {"redis": redis} if redis else {})
    wanted = tuple(kinds)

    async def run(store: Store) -> tuple[T, InForce | None]:
        result = await operation(store)
        if not changed(result):
            return result, None
        local = settings.data_dir if settings.redis is None else None
        return result, await in_force(store, wanted, local_sidecar=local)

    return with_store(data_dir, config, redis, run)


async def in_force(
    store: Store,
    kinds: Sequence[str],
    *,
    local_sidecar: Path | None,
    timeout: float = ACK_TIMEOUT,
) -> InForce:
    """Notify the sidecars of a change of `kinds`, then wait for their heartbeats.

    `local_sidecar`: the embedded store's data dir, whose sidecar is signalled;
    None for a shared store (notified through it). Never raises StoreUnavailable:
    the change is already stored, so a store lost now is reported, not fatal.
    """
    from sidecar.errors import StoreUnavailable

    try:
        targets = {kind: await store.records_version(kind) for kind in kinds}
        if local_sidecar is None:
            for kind in kinds:
                await store.fleet_notify(kind)
        else:
            await asyncio.to_thread(signal_local_sidecar, local_sidecar)
        return await _wait(store, targets, timeout)
    except StoreUnavailable as error:
        return InForce(unknown=error.message, waited=timeout)


async def _wait(store: FleetStore, targets: dict[str, int], timeout: float) -> InForce:
    from sidecar.store.fleet import is_gone

    deadline = time.monotonic() + timeout
    while True:
        # Wall-clock: the sidecars' last_seen is theirs.
        now = time.time()
        live = [beat for beat in await store.fleet_list() if not is_gone(beat, now)]
        taken = [beat for beat in live if _has_taken(beat, targets)]
        if len(taken) == len(live) or time.monotonic() >= deadline:
            return InForce(live=live, acknowledged=taken, waited=timeout)
        await asyncio.sleep(ACK_POLL)


def _has_taken(beat: Heartbeat, targets: dict[str, int]) -> bool:
    return all(beat.records.get(kind, -1) >= version for kind, version in targets.items())


def signal_local_sidecar(data_dir: Path) -> bool:
    """SIGUSR1 to the data dir's sidecar, only once its identity is proven; whether sent."""
    from mirapi_cli.daemon import identify
    from sidecar.observability.fleet import RELOAD_SIGNAL
    from sidecar.process.state import read_state

    try:
        state = read_state(data_dir)
    except ValueError:
        return False
    if state is None or not identify(state).running:
        # Not running, or its pid is not provably the sidecar: its next poll
        # (or nothing, when none runs) takes the change.
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(state.pid, RELOAD_SIGNAL)
        return True
    return False


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def report(in_force: InForce | None) -> str:
    """The summary to append to a command's message ("" when nothing changed)."""
    return "" if in_force is None else f"; {in_force.summary()}"


def warn(in_force: InForce | None) -> None:
    """Print the warnings about sidecars that did not take a change, on stderr."""
    from mirapi_cli import output

    for line in [] if in_force is None else in_force.warnings():
        output.note(line)


def as_json(in_force: InForce | None) -> dict[str, Any]:
    """{"sidecars": {...}} to merge into a command's --json answer."""
    return {} if in_force is None else {"sidecars": in_force.as_json()}


__all__ = ["ACK_TIMEOUT", "InForce", "as_json", "change", "in_force", "report", "warn"]
