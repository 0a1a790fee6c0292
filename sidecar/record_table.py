"""A sidecar's copy of one kind of stored record (routes, client keys,
secrets), so a request finds what it needs with a dict lookup and no store
round trip (SPEC §4, §2.1, §6).

Records are written by `mirapi routes|keys|secrets`, often from another
process, into the store every sidecar shares. A `RecordTable` polls
`NamedRecordStore.records_version(kind)` every `interval` seconds (real time) and
reloads the kind only when the version changed, so a change is seen within
`interval` plus one load:

    start()  -> load, then poll in the background until stop()
    get(name) / names() / all()  -> the snapshot, never the store
    refresh()  -> reload now if the version moved (a change notice, SPEC §11)
    recheck(name)  -> get(name), after one look at the store when it is not
                      there (at most once per RECHECK_EVERY, shared by callers)
    version  -> the store's version of the snapshot, for the heartbeat
    on_change(callback)  -> called after each reload that changed the version

Store trouble never reaches a request: while the store does not answer the
table keeps serving its last good snapshot (logged once, and once more when
the store answers again). A stored record that does not decode is left out
and named in a warning (never its content); the others load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from sidecar.errors import StoreUnavailable
from sidecar.store.records import NamedRecordStore

T = TypeVar("T")
#: Turns a stored record (its name, its data) into its value; raises on bad data.
Decoder = Callable[[str, bytes], T]

#: A name the snapshot lacks is looked up in the store at most this often
#: (real seconds, per table): a flood of bad names is not a flood of reads.
RECHECK_EVERY = 0.1

#: What a stored record that did not write itself can raise while decoding.
_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)


def decode_all(kind: str, encoded: Mapping[str, bytes], decode: Decoder[T]) -> dict[str, T]:
    """Every record that decodes, by its stored name; the others logged and left out."""
    decoded: dict[str, T] = {}
    log = logging.getLogger(f"mirapi.{kind}")
    singular = kind.removesuffix("s")
    for name, data in encoded.items():
        try:
            decoded[name] = decode(name, data)
        except _UNREADABLE as exc:
            # The exception's type only: its text could quote the stored data.
            log.warning("%s %r is unreadable (%s); skipped", singular, name, type(exc).__name__)
    return decoded


class RecordTable(Generic[T]):
    """Every record of `kind` in `store`, kept fresh by polling its version."""

    def __init__(
        self, store: NamedRecordStore, kind: str, decode: Decoder[T], *, interval: float = 0.5
    ) -> None:
        self._store = store
        self._kind = kind
        self._decode = decode
        self._log = logging.getLogger(f"mirapi.{kind}")
        self._interval = interval
        self._records: dict[str, T] = {}
        #: The store's version of `_records`; None until the first load.
        self._version: int | None = None
        self._failing = False
        # One refresh at a time, so an older load never replaces a newer one.
        self._refreshing = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._changed: list[Callable[[], None]] = []
        #: The last re-check for an unknown name, shared by the callers it serves.
        self._recheck: asyncio.Future[None] | None = None
        self._next_recheck = 0.0

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def version(self) -> int | None:
        """The store's version of the snapshot; None until the first load."""
        return self._version

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after every reload that took a new version."""
        self._changed.append(callback)

    async def recheck(self, name: str) -> T | None:
        """`get(name)`, after one look at the store when the snapshot lacks it.

        A record added a moment ago must not be refused for the poll it has
        not had yet. Callers within RECHECK_EVERY of the last look share it
        (or its result) rather than each reading the store; never raises.
        """
        found = self._records.get(name)
        if found is not None:
            return found
        now = time.monotonic()
        if self._recheck is None or (self._recheck.done() and now >= self._next_recheck):
            self._next_recheck = now + RECHECK_EVERY
            self._recheck = asyncio.ensure_future(self._refresh_safely())
        # Shielded: one caller going away must not cancel the others' look.
        await asyncio.shield(self._recheck)
        return self._records.get(name)

    def get(self, name: str) -> T | None:
        """The record called `name` in the last snapshot, or None."""
        return self._records.get(name)

    def names(self) -> list[str]:
        """Every record name in the last snapshot, sorted."""
        return sorted(self._records)

    def all(self) -> Mapping[str, T]:
        """The last snapshot (replaced, never changed in place, by a reload)."""
        return self._records

    async def refresh(self) -> None:
        """Reload the records if the store's version moved; keep them if it does not answer."""
        async with self._refreshing:
            try:
                version = await self._store.records_version(self._kind)
                if version == self._version:
                    self._store_answered()
                    return
                version, encoded = await self._store.records_load(self._kind)
            except StoreUnavailable as exc:
                self._store_failed(exc.message)
                return
            self._store_answered()
            self._records = decode_all(self._kind, encoded, self._decode)
            self._version = version
        for callback in self._changed:
            callback()

    async def start(self) -> None:
        """Load the routes, then poll every `interval` seconds until `stop`; never raises."""
        if self._poller is not None:
            return
        self._stopping.clear()
        await self._refresh_safely()
        self._poller = asyncio.create_task(self._poll(), name=f"mirapi-{self._kind}-table")

    async def stop(self) -> None:
        """End the polling; returns once the task is gone."""
        poller, self._poller = self._poller, None
        if poller is None:
            return
        # The flag as well as the cancel: a cancellation swallowed inside a
        # store client (asyncio.wait_for on Python 3.11) must not keep it alive.
        self._stopping.set()
        poller.cancel()
        await asyncio.wait({poller})

    async def _poll(self) -> None:
        while not self._stopping.is_set():
            # Real time, not the injected clock: a fake clock's sleep would spin.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            await self._refresh_safely()

    async def _refresh_safely(self) -> None:
        try:
            await self.refresh()
        except Exception:
            # Not a store outage (those are handled in refresh): a bug. Keep
            # polling with the last snapshot, and say so once.
            if not self._failing:
                self._log.exception("reading the %s failed; keeping the last ones", self._kind)
            self._failing = True

    def _store_failed(self, reason: str) -> None:
        if not self._failing:
            self._log.warning(
                "%s cannot be read (%s); keeping the last %d",
                self._kind,
                reason,
                len(self._records),
            )
        self._failing = True

    def _store_answered(self) -> None:
        if self._failing:
            self._log.info("%s can be read again", self._kind)
        self._failing = False
