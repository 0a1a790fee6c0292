"""What each proxied request came to, and the observers that keep it (SPEC §8).

The sidecar builds one `Outcome` per request once its answer is decided and
hands it to every `Observer` (events, request records, stats, metrics).
`observe` is synchronous and must never block or raise into the request:
observers that write to the store queue what they keep in a `BatchWriter`,
which flushes in the background, so a slow or lost store costs the request
nothing and loses at most what the queue could not hold (counted, logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from sidecar.exchange import Exchange

log = logging.getLogger("mirapi.observe")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One proxied request's result, for the observers. Never holds a response body."""

    request_id: str
    #: Wall-clock seconds when the request arrived.
    time: float
    method: str
    #: The stored route it went through, or None.
    route: str | None
    #: host[:port] of the upstream that answered (else the first target); never a path.
    host: str
    status: int
    attempts: int
    #: `retry`, `cache`, `failover`, `cascade_fallback`, or None.
    rescue: str | None
    #: Seconds from arrival to the answer's head.
    latency: float
    #: The sidecar's error code when it answered by itself (`pci_card_number`, ...).
    error: str | None
    client_id: str
    #: The request as parsed (body included, for records and rescued capital);
    #: None when it was refused before it was read. Observers must not keep a
    #: PCI-blocked request's body (error == "pci_card_number").
    exchange: Exchange | None


class Observer(Protocol):
    """Told of every outcome; `start`/`stop` bracket the sidecar's life."""

    def observe(self, outcome: Outcome) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class BatchWriter(Generic[T]):
    """Queues items and writes them in batches from a background task.

    `write` gets every item queued since the last flush, oldest first. The
    queue holds at most `limit` items; past that new ones are dropped and
    counted (a store that cannot keep up must not grow the sidecar's memory).
    A failing `write` is logged once per run of failures and its batch dropped.
    With `prompt`, a write starts as soon as an item is queued (what is
    queued while it runs goes in the next batch), for logs a user reads
    right after the request (events: `mirapi events tail` just after a
    `curl`); without it, every `interval`.
    """

    def __init__(
        self,
        name: str,
        write: Callable[[Sequence[T]], Awaitable[None]],
        *,
        interval: float = 0.25,
        limit: int = 10_000,
        prompt: bool = False,
    ) -> None:
        self._name = name
        self._prompt = prompt
        self._due = asyncio.Event()
        self._write = write
        self._interval = interval
        self._limit = limit
        self._queue: list[T] = []
        self.dropped = 0
        self._failing = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, item: T) -> None:
        """Queue `item`; never blocks, never raises."""
        if len(self._queue) >= self._limit:
            self.dropped += 1
            return
        self._queue.append(item)
        if self._prompt:
            self._due.set()

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=f"mirapi-{self._name}-writer")

    async def stop(self) -> None:
        """End the task, then write what is still queued (once).

        Not a cancel: a batch being written when stop is called finishes first.
        """
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            self._due.set()
            await task
        await self.flush()

    async def flush(self) -> None:
        """Write everything queued now."""
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        try:
            await self._write(batch)
        except Exception as error:
            # The type only: a message could quote what was being written.
            if not self._failing:
                log.warning(
                    "%s: %d dropped, the store did not take them (%s)",
                    self._name,
                    len(batch),
                    type(error).__name__,
                )
            self._failing = True
            return
        if self._failing:
            log.info("%s: writing again", self._name)
        self._failing = False

    async def _run(self) -> None:
        wake = self._due if self._prompt else self._stopping
        while not self._stopping.is_set():
            # Real time: a fake clock's sleep would spin.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await wake.wait()
            self._due.clear()
            await self.flush()
