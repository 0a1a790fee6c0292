"""The sidecar's route snapshot: loaded at start, fresh within the poll
interval after a write from another store, kept while the store fails, and
never broken by one bad entry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sidecar.errors import StoreUnavailable
from sidecar.routing import routes
from sidecar.routing.route_table import RouteTable
from sidecar.routing.routes import Endpoint, Route
from sidecar.store.base import Store
from sidecar.store.embedded import EmbeddedStore
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock

INTERVAL = 0.05


class ControlledStore(MemoryStore):
    """A MemoryStore whose route reads can be failed, and are counted."""

    def __init__(self) -> None:
        super().__init__(FakeClock().clock())
        self.down = False
        self.failure: Exception | None = None
        self.version_reads = 0
        self.loads = 0

    async def records_version(self, kind: str) -> int:
        self.version_reads += 1
        self._fail_if_told()
        return await super().records_version(kind)

    async def records_load(self, kind: str) -> tuple[int, dict[str, bytes]]:
        self.loads += 1
        self._fail_if_told()
        return await super().records_load(kind)

    def _fail_if_told(self) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        if self.down:
            raise StoreUnavailable("redis unreachable: connection refused")


def route(name: str, url: str = "https://api.example.com") -> Route:
    return Route(name=name, endpoints=(Endpoint(url),))


async def put(store: Store, item: Route) -> None:
    assert await store.record_put("routes", item.name, routes.encode(item), replace=True)


async def eventually(check: Callable[[], bool], within: float = 1.0) -> float:
    """Seconds until `check()` held; fails after `within`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, "not seen in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "mirapi.routes" and r.levelno == level
    ]


@pytest.fixture
def store() -> ControlledStore:
    return ControlledStore()


@pytest.fixture
async def table(store: ControlledStore) -> AsyncIterator[RouteTable]:
    routes_ = RouteTable(store, interval=INTERVAL)
    yield routes_
    await routes_.stop()


# -- the snapshot -------------------------------------------------------------------


async def test_start_loads_every_route(store: ControlledStore, table: RouteTable) -> None:
    stripe, llm = route("stripe"), route("llm", "https://llm.example.com/v1")
    await put(store, stripe)
    await put(store, llm)

    await table.start()

    assert table.get("stripe") == stripe
    assert table.get("llm") == llm
    assert table.get("missing") is None
    assert table.names() == ["llm", "stripe"]


async def test_refresh_alone_loads_without_polling(store: ControlledStore) -> None:
    table = RouteTable(store, interval=INTERVAL)
    await put(store, route("stripe"))

    await table.refresh()

    assert table.names() == ["stripe"]


async def test_routes_are_reloaded_only_when_the_version_moves(
    store: ControlledStore, table: RouteTable
) -> None:
    await put(store, route("stripe"))
    await table.start()
    await eventually(lambda: store.version_reads >= 4)
    assert store.loads == 1

    await put(store, route("llm"))
    await eventually(lambda: table.get("llm") is not None)
    assert store.loads == 2


@pytest.fixture(params=["embedded", "redis"])
async def two_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Store]]:
    """A sidecar's store and the CLI's, on one file or one server."""
    clock = FakeClock().clock()
    pair: tuple[Store, Store]
    if request.param == "embedded":
        pair = (
            EmbeddedStore(tmp_path / "mirapi.db", clock),
            EmbeddedStore(tmp_path / "mirapi.db", clock),
        )
    else:
        from sidecar.store.redis import RedisStore

        url = request.getfixturevalue("redis_url")
        pair = (RedisStore(url, clock), RedisStore(url, clock))
    for each in pair:
        await each.open()
    try:
        yield pair
    finally:
        for each in pair:
            await each.close()


async def test_a_write_from_another_store_is_seen_within_the_interval(
    two_stores: tuple[Store, Store],
) -> None:
    sidecar_store, cli_store = two_stores
    table = RouteTable(sidecar_store, interval=INTERVAL)
    await table.start()
    try:
        added = route("stripe")
        await put(cli_store, added)
        assert await eventually(lambda: table.get("stripe") == added) < 0.5

        changed = route("stripe", "https://backup.example.com")
        await put(cli_store, changed)
        await eventually(lambda: table.get("stripe") == changed, within=0.5)

        assert await cli_store.record_delete("routes", "stripe")
        await eventually(lambda: table.get("stripe") is None, within=0.5)
    finally:
        await table.stop()


# -- trouble ------------------------------------------------------------------------


async def test_a_store_outage_keeps_the_last_routes_and_is_logged_once(
    store: ControlledStore, table: RouteTable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mirapi.routes")
    stripe = route("stripe")
    await put(store, stripe)
    await table.start()

    store.down = True
    failing_from = store.version_reads
    await eventually(lambda: store.version_reads >= failing_from + 4)
    assert table.get("stripe") == stripe
    warnings = messages(caplog, logging.WARNING)
    assert warnings == [
        "routes cannot be read (redis unreachable: connection refused); keeping the last 1"
    ]

    store.down = False
    await put(store, route("llm"))
    await eventually(lambda: table.get("llm") is not None)
    assert table.get("stripe") == stripe
    assert messages(caplog, logging.INFO) == ["routes can be read again"]
    assert len(messages(caplog, logging.WARNING)) == 1


async def test_start_with_the_store_down_does_not_raise_and_loads_later(
    store: ControlledStore, table: RouteTable
) -> None:
    await put(store, route("stripe"))
    store.down = True

    await table.start()
    assert table.names() == []

    store.down = False
    await eventually(lambda: table.names() == ["stripe"])


async def test_an_unexpected_error_does_not_stop_the_polling(
    store: ControlledStore, table: RouteTable, caplog: pytest.LogCaptureFixture
) -> None:
    await table.start()
    store.failure = RuntimeError("a bug")
    await put(store, route("stripe"))

    await eventually(lambda: table.get("stripe") is not None)
    assert len(messages(caplog, logging.ERROR)) == 1


async def test_an_unreadable_route_is_skipped_and_named(
    store: ControlledStore, table: RouteTable, caplog: pytest.LogCaptureFixture
) -> None:
    stripe = route("stripe")
    await put(store, stripe)
    corrupt = {
        "not-json": b"secret-ish garbage {",
        "no-endpoints": b'{"name": "no-endpoints"}',
        "a-list": b"[1, 2]",
        "not-an-object": b'"text"',
    }
    for name, data in corrupt.items():
        await store.record_put("routes", name, data, replace=False)
    await store.record_put("routes", "alias", routes.encode(route("other-name")), replace=False)

    await table.start()

    assert table.names() == ["stripe"]
    assert table.get("stripe") == stripe
    warnings = "\n".join(messages(caplog, logging.WARNING))
    for name in [*corrupt, "alias"]:
        assert repr(name) in warnings
    assert "garbage" not in warnings


# -- stopping -----------------------------------------------------------------------


async def test_stop_ends_the_polling_and_keeps_the_snapshot(
    store: ControlledStore, table: RouteTable
) -> None:
    await put(store, route("stripe"))
    await table.start()
    await eventually(lambda: store.version_reads >= 2)

    await asyncio.wait_for(table.stop(), 1)
    reads = store.version_reads
    await asyncio.sleep(3 * INTERVAL)

    assert store.version_reads == reads
    assert table.names() == ["stripe"]
    await table.stop()  # twice is fine


class CancelSwallowingStore(ControlledStore):
    """Version reads that are slow and may lose a cancellation, as a store client
    built on Python 3.11's asyncio.wait_for sometimes does."""

    async def records_version(self, kind: str) -> int:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.02)
        return await super().records_version(kind)


async def test_stop_ends_the_polling_even_when_a_read_loses_the_cancel() -> None:
    store = CancelSwallowingStore()
    table = RouteTable(store, interval=0.001)
    await table.start()
    await asyncio.sleep(0.03)  # the poller is mid-read

    await asyncio.wait_for(table.stop(), 1)
    reads = store.version_reads
    await asyncio.sleep(0.05)
    assert store.version_reads == reads
