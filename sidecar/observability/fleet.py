"""The sidecar's part in the fleet (SPEC §11): heartbeats and change notices.

Two background tasks, never on the request path:

  - the heartbeat: every `interval` seconds, and at once after a record
    table took a new version, this sidecar's `Heartbeat` goes into the
    store (`FleetStore.fleet_put`): who it is, where it listens, the record
    version it serves per kind, requests served and jobs leased. The CLI
    reads them to wait until a change is in force everywhere, and to list
    the fleet (`mirapi sidecar list`).
  - the notice listener: a change notice (Redis pub/sub, `fleet_listen`)
    names a kind of record; its table reloads at once. On the embedded store
    the CLI sends SIGUSR1 instead (mirapi_cli/propagation.py), and every
    table reloads. Polling (RecordTable) stays as the fallback.

A store that does not answer costs a warning and a retry, never a request.
The request count is the one thing on the request path: `observe` adds 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sidecar import __version__
from sidecar.clock import SYSTEM_CLOCK, Clock
from sidecar.errors import StoreUnavailable
from sidecar.observability.observe import Outcome
from sidecar.process.state import read_state
from sidecar.record_table import RecordTable
from sidecar.store.fleet import KEEP, FleetStore, Heartbeat

log = logging.getLogger("mirapi.fleet")

#: Seconds between heartbeats (SPEC §11: "every few seconds").
HEARTBEAT_EVERY = 2.0
#: After losing the notice channel, listen again this long after.
LISTEN_RETRY = 1.0
#: While the state file (the bound address) is not written yet, look this often...
ADDRESS_POLL = 0.1
#: ...for at most this long (a sidecar served in-process has no state file).
ADDRESS_PATIENCE = 10.0
#: A clean stop removes this sidecar's heartbeat, waiting at most this long.
REMOVE_TIMEOUT = 1.0
#: What the CLI sends the embedded store's sidecar to reload its records.
RELOAD_SIGNAL = signal.SIGUSR1


class FleetService:
    """This sidecar's heartbeat and notice listener; an Observer (it counts requests)."""

    def __init__(
        self,
        store: FleetStore,
        tables: Mapping[str, RecordTable[Any]],
        *,
        listen: str,
        data_dir: Path | None,
        started_at: float,
        jobs_leased: Callable[[], int],
        clock: Clock = SYSTEM_CLOCK,
        interval: float = HEARTBEAT_EVERY,
        keep: float = KEEP,
    ) -> None:
        #: Random per process and start: a restarted sidecar is a new entry.
        self.id = secrets.token_hex(6)
        self._store = store
        self._tables = tables
        self._listen = listen
        self._data_dir = data_dir
        self._started_at = started_at
        self._jobs_leased = jobs_leased
        self._clock = clock
        self._interval = interval
        self._keep = keep
        self._address: str | None = None
        self._requests = 0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reloads: set[asyncio.Task[None]] = set()
        self._failing = False
        self._signal_installed = False

    # -- Observer --------------------------------------------------------------

    def observe(self, outcome: Outcome) -> None:
        self._requests += 1

    async def start(self) -> None:
        """Start heartbeating and listening (the tables are loaded by now)."""
        if self._tasks:
            return
        self._stopping.clear()
        for table in self._tables.values():
            table.on_change(self._wake.set)
        self._install_signal()
        self._tasks = [
            asyncio.create_task(self._heartbeats(), name="mirapi-heartbeat"),
            asyncio.create_task(self._notices(), name="mirapi-notices"),
        ]

    async def stop(self) -> None:
        """Stop both tasks and take this sidecar off the list (best effort)."""
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        self._remove_signal()
        self._stopping.set()
        for task in [*tasks, *self._reloads]:
            task.cancel()
        await asyncio.gather(*tasks, *self._reloads, return_exceptions=True)
        with contextlib.suppress(StoreUnavailable, TimeoutError):
            async with asyncio.timeout(REMOVE_TIMEOUT):
                await self._store.fleet_remove(self.id)

    # -- the heartbeat ---------------------------------------------------------

    def heartbeat(self) -> Heartbeat:
        """What this sidecar says of itself now."""
        versions = {kind: table.version for kind, table in self._tables.items()}
        return Heartbeat(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            listen=self._address or self._listen,
            version=__version__,
            started_at=self._started_at,
            last_seen=self._clock.now(),
            # A kind never loaded (the store was down at start) is left out:
            # the CLI counts such a sidecar as not having taken any change.
            records={kind: v for kind, v in versions.items() if v is not None},
            requests=self._requests,
            jobs_leased=self._jobs_leased(),
        )

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        looking_until = loop.time() + ADDRESS_PATIENCE
        while not self._stopping.is_set():
            self._wake.clear()
            self._find_address()
            await self._beat()
            wait = self._interval
            if self._address is None and loop.time() < looking_until:
                wait = min(wait, ADDRESS_POLL)
            # Real time, not the injected clock: a fake clock's sleep would spin.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _beat(self) -> None:
        try:
            await self._store.fleet_put(self.heartbeat(), self._keep)
        except StoreUnavailable as exc:
            if not self._failing:
                log.warning("heartbeat not written (%s); retrying", exc.message)
            self._failing = True
            return
        except Exception:
            if not self._failing:
                log.exception("heartbeat failed; retrying")
            self._failing = True
            return
        if self._failing:
            log.info("heartbeat written again")
        self._failing = False

    def _find_address(self) -> None:
        """The bound address, from this process's state file (port 0 is resolved there)."""
        if self._address is not None or self._data_dir is None:
            return
        try:
            state = read_state(self._data_dir)
        except (OSError, ValueError):
            return
        if state is not None and state.pid == os.getpid():
            self._address = state.address

    # -- notices ---------------------------------------------------------------

    async def _notices(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._store.fleet_listen(self._on_notice)
            except StoreUnavailable:
                pass  # the heartbeat says so; polling covers the gap
            except Exception:
                log.exception("listening for change notices failed; retrying")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LISTEN_RETRY):
                    await self._stopping.wait()

    def _on_notice(self, kind: str) -> None:
        """A notice names a kind: reload it now (an unknown kind: every table)."""
        tables = [self._tables[kind]] if kind in self._tables else list(self._tables.values())
        task = asyncio.create_task(self._reload(tables), name="mirapi-reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self, tables: list[RecordTable[Any]]) -> None:
        for table in tables:
            try:
                await table.refresh()
            except Exception:
                log.exception("reloading the %s on a notice failed", table.kind)
        # Even when nothing moved (a poll got there first): the CLI waits for it.
        self._wake.set()

    def _install_signal(self) -> None:
        """SIGUSR1 reloads every table, unless someone else handles it (tests serving
        several sidecars in one process)."""
        try:
            if signal.getsignal(RELOAD_SIGNAL) is not signal.SIG_DFL:
                return
            asyncio.get_running_loop().add_signal_handler(RELOAD_SIGNAL, self._on_notice, "")
        except (ValueError, NotImplementedError, RuntimeError, AttributeError):
            return  # not the main thread, or no signals here: notices and polling remain
        self._signal_installed = True

    def _remove_signal(self) -> None:
        if self._signal_installed:
            with contextlib.suppress(ValueError, NotImplementedError, RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(RELOAD_SIGNAL)
            self._signal_installed = False
