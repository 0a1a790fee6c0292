"""The sidecar's copy of every stored route, so a request finds its route
with a dict lookup and no store round trip (SPEC §4).

Routes are written by `mirapi routes`, often from another process, into the
store every sidecar shares. A `RouteTable` polls `Store.routes_version()`
every `interval` seconds (real time) and reloads all routes only when the
version changed, so a change is seen within `interval` plus one load:

    start()  -> load, then poll in the background until stop()
    get(name) / names()  -> the snapshot, never the store

Store trouble never reaches a request: while the store does not answer the
table keeps serving its last good snapshot (logged once, and once more when
the store answers again). A stored route that does not decode is left out
and named in a warning; the others load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from sidecar import routes
from sidecar.errors import StoreUnavailable
from sidecar.routes import Route
from sidecar.store.base import Store

log = logging.getLogger("mirapi.routes")

#: What a stored route that did not write itself can raise while decoding.
_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)


def decode_all(encoded: Mapping[str, bytes]) -> dict[str, Route]:
    """Every route that decodes, by its stored name; the others logged and left out."""
    decoded: dict[str, Route] = {}
    for name, data in encoded.items():
        try:
            route = routes.decode(data)
        except _UNREADABLE as exc:
            # The exception's type only: its text could quote the stored data.
            log.warning("route %r is unreadable (%s); skipped", name, type(exc).__name__)
            continue
        if route.name != name:
            log.warning("route %r is stored under another name; skipped", name)
            continue
        decoded[name] = route
    return decoded


class RouteTable:
    """Every route in `store`, kept fresh by polling its version."""

    def __init__(self, store: Store, interval: float = 0.5) -> None:
        self._store = store
        self._interval = interval
        self._routes: dict[str, Route] = {}
        #: The store's version of `_routes`; None until the first load.
        self._version: int | None = None
        self._failing = False
        # One refresh at a time, so an older load never replaces a newer one.
        self._refreshing = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    def get(self, name: str) -> Route | None:
        """The route called `name` in the last snapshot, or None."""
        return self._routes.get(name)

    def names(self) -> list[str]:
        """Every route name in the last snapshot, sorted."""
        return sorted(self._routes)

    async def refresh(self) -> None:
        """Reload the routes if the store's version moved; keep them if it does not answer."""
        async with self._refreshing:
            try:
                version = await self._store.routes_version()
                if version == self._version:
                    self._store_answered()
                    return
                version, encoded = await self._store.routes_load()
            except StoreUnavailable as exc:
                self._store_failed(exc.message)
                return
            self._store_answered()
            self._routes = decode_all(encoded)
            self._version = version

    async def start(self) -> None:
        """Load the routes, then poll every `interval` seconds until `stop`; never raises."""
        if self._poller is not None:
            return
        self._stopping.clear()
        await self._refresh_safely()
        self._poller = asyncio.create_task(self._poll(), name="mirapi-route-table")

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
                log.exception("reading the routes failed; keeping the last ones")
            self._failing = True

    def _store_failed(self, reason: str) -> None:
        if not self._failing:
            log.warning(
                "routes cannot be read (%s); keeping the last %d", reason, len(self._routes)
            )
        self._failing = True

    def _store_answered(self) -> None:
        if self._failing:
            log.info("routes can be read again")
        self._failing = False
