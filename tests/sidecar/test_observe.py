"""The BatchWriter under every observer: batched, bounded, never losing a batch to stop()."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from sidecar.observability.observe import BatchWriter


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail = False

    async def write(self, items: Sequence[int]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("secret-looking detail")
        self.batches.append(list(items))


async def test_items_are_written_in_order_in_the_background() -> None:
    sink = Sink()
    writer = BatchWriter("test", sink.write, interval=0.01)
    await writer.start()
    for n in range(3):
        writer.add(n)
    async with asyncio.timeout(2):
        await sink.entered.wait()  # the background task wrote without a flush call
    await writer.stop()
    assert [n for batch in sink.batches for n in batch] == [0, 1, 2]


async def test_stop_lets_a_batch_being_written_finish_and_writes_the_rest() -> None:
    sink = Sink()
    sink.gate = asyncio.Event()
    writer = BatchWriter("test", sink.write, interval=0.01)
    await writer.start()
    writer.add(1)
    async with asyncio.timeout(2):
        await sink.entered.wait()
    writer.add(2)  # queued while the first batch is being written
    stopping = asyncio.create_task(writer.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # waits for the write under way
    sink.gate.set()
    async with asyncio.timeout(2):
        await stopping
    assert sink.batches == [[1], [2]]


async def test_a_full_queue_drops_and_counts() -> None:
    sink = Sink()
    writer = BatchWriter("test", sink.write, limit=2)
    for n in range(5):
        writer.add(n)
    assert writer.dropped == 3
    await writer.flush()
    assert sink.batches == [[0, 1]]


async def test_a_failing_write_is_logged_once_by_type_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Sink()
    sink.fail = True
    writer = BatchWriter("test", sink.write)
    for _ in range(2):
        writer.add(1)
        await writer.flush()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["test: 1 dropped, the store did not take them (ConnectionError)"]
    sink.fail = False
    writer.add(2)
    await writer.flush()
    assert sink.batches == [[2]]


async def test_a_prompt_writer_writes_as_soon_as_an_item_is_queued() -> None:
    """Events are read right after the request that made them: no interval's wait."""
    written: list[list[int]] = []

    async def write(batch: Sequence[int]) -> None:
        written.append(list(batch))

    writer: BatchWriter[int] = BatchWriter("t", write, interval=30.0, prompt=True)
    await writer.start()
    try:
        writer.add(1)
        for _ in range(100):
            if written:
                break
            await asyncio.sleep(0.01)
        assert written == [[1]]
    finally:
        await writer.stop()
