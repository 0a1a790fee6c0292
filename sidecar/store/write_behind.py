"""The write-behind queue of the embedded store: what changed, not yet on disk.

`MemoryStore` reports each change worth keeping (a cache entry stored or
dropped, an explicit key's replay record, a breaker saved or forgotten) to
`PendingWrites`, its observer. Only the latest change to each row is kept,
in change order; the writer takes them all as one `Batch`, one transaction,
and puts a batch that failed back under the changes made since.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TypeVar

from sidecar.store.base import BreakerStatus, StoredResponse
from sidecar.store.memory import IdempotencyRecord

T = TypeVar("T")


@dataclass(slots=True)
class Batch:
    """Changes for one transaction; None deletes the row."""

    cache: dict[str, StoredResponse | None] = field(default_factory=dict)
    records: dict[str, IdempotencyRecord] = field(default_factory=dict)
    breakers: dict[str, BreakerStatus | None] = field(default_factory=dict)
    #: When set: delete what expired by then.
    sweep_before: float | None = None

    def __len__(self) -> int:
        return len(self.cache) + len(self.records) + len(self.breakers)


class PendingWrites:
    """The write-behind queue: the latest change to each row, in change order."""

    def __init__(self) -> None:
        self._batch = Batch()
        self.ready = asyncio.Event()

    def cache_stored(self, key: str, entry: StoredResponse) -> None:
        _set_last(self._batch.cache, key, entry)
        self.ready.set()

    def cache_dropped(self, key: str) -> None:
        _set_last(self._batch.cache, key, None)
        self.ready.set()

    def record_kept(self, key: str, record: IdempotencyRecord) -> None:
        self._batch.records[key] = record
        self.ready.set()

    def breaker_saved(self, host: str, status: BreakerStatus | None) -> None:
        self._batch.breakers[host] = status
        self.ready.set()

    def take(self) -> Batch:
        batch, self._batch = self._batch, Batch()
        self.ready.clear()
        return batch

    def put_back(self, batch: Batch) -> None:
        """Queue a batch that failed again, under the changes made since."""
        for name in ("cache", "records", "breakers"):
            newer = getattr(self._batch, name)
            setattr(self._batch, name, getattr(batch, name) | newer)
        if len(self._batch):
            self.ready.set()


def _set_last(changes: dict[str, T], key: str, value: T) -> None:
    # Re-inserted at the end: rows are written, and loaded back, in change order.
    changes.pop(key, None)
    changes[key] = value
