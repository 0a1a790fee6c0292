"""What the embedded store's file-backed capabilities share: the database and
the one writer thread that runs its statements.

A file-backed capability (records, jobs, logs) is a mixin over
`EmbeddedState` and the memory mixin of the same capability: with a file
each call is a statement on the writer thread, awaited; without one (an
`EmbeddedStore(None)`) it is the memory mixin's (`super()`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from sidecar.errors import StoreUnavailable
from sidecar.store.embedded.sqlite import safe_cause
from sidecar.store.memory.state import MemoryState

if TYPE_CHECKING:
    from sidecar.store.embedded.database import Database

T = TypeVar("T")


class EmbeddedState(MemoryState):
    """The base of every file-backed capability; the store sets these in its `__init__`."""

    _database: Database | None
    _executor: ThreadPoolExecutor | None

    async def _run(self, doing: str, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` on the writer thread; sqlite and OS errors become StoreUnavailable."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"embedded database {doing} failed: {safe_cause(exc)}") from exc

    async def _on_file(self, doing: str, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` on the writer thread, once the store is open."""
        if self._executor is None:
            raise StoreUnavailable(f"embedded database {doing} failed: the store is not open")
        return await self._run(doing, work, *args)
