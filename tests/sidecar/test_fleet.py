"""The sidecar's side of SPEC §11, in process on the memory store: the
re-check of an unknown route before 404 (and its rate limit), the heartbeat
(its fields, and a beat at once after a reload), and a notice reloading its
kind at once with a poll too slow to matter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from sidecar.errors import NotFound
from sidecar.exchange import Exchange, Response
from sidecar.observability.fleet import FleetService
from sidecar.policy import parse_policy
from sidecar.record_table import RECHECK_EVERY
from sidecar.routing import routes
from sidecar.routing.route_table import RouteTable
from sidecar.routing.routes import Endpoint, Route
from sidecar.stages.routing import Routing
from sidecar.store.fleet import Heartbeat
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock

PAY = Route(name="pay", endpoints=(Endpoint("https://api.example.com"),))
#: Slower than any test: only a notice or a re-check can bring a change in.
NEVER = 3600.0


class CountingStore(MemoryStore):
    """A memory store that counts reads of the records' version."""

    def __init__(self, fake: FakeClock) -> None:
        super().__init__(fake.clock())
        self.version_reads = 0

    async def records_version(self, kind: str) -> int:
        self.version_reads += 1
        return await super().records_version(kind)


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(fake: FakeClock) -> CountingStore:
    return CountingStore(fake)


@pytest.fixture
async def table(store: CountingStore) -> AsyncIterator[RouteTable]:
    made = RouteTable(store, interval=NEVER)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


def exchange(path: str) -> Exchange:
    return Exchange("GET", path, "", [], b"", parse_policy({}, 30.0), "rid")


async def call(routing: Routing, path: str) -> Exchange:
    async def call_next(seen: Exchange) -> Response:
        return Response(200, [])

    ex = exchange(path)
    await routing(ex, call_next)
    return ex


async def test_a_route_added_a_moment_ago_is_served_not_404(
    store: CountingStore, table: RouteTable
) -> None:
    await store.record_put("routes", "pay", routes.encode(PAY), replace=False)
    assert table.get("pay") is None  # the poll has not come

    ex = await call(Routing(table), "/r/pay/charges")

    assert ex.route == PAY


async def test_a_flood_of_unknown_names_reads_the_store_once_per_window(
    store: CountingStore, table: RouteTable
) -> None:
    routing = Routing(table)
    before = store.version_reads

    async def unknown(n: int) -> None:
        with pytest.raises(NotFound):
            await call(routing, f"/r/nope{n}/x")

    started = time.monotonic()
    await asyncio.gather(*(unknown(n) for n in range(200)))
    elapsed = time.monotonic() - started

    windows = int(elapsed / RECHECK_EVERY) + 1
    assert 1 <= store.version_reads - before <= windows
    assert store.version_reads - before < 10


async def test_a_known_route_never_reads_the_store(
    store: CountingStore, table: RouteTable
) -> None:
    await store.record_put("routes", "pay", routes.encode(PAY), replace=False)
    await table.refresh()
    before = store.version_reads

    for _ in range(50):
        await call(Routing(table), "/r/pay/x")

    assert store.version_reads == before


async def test_after_the_window_an_unknown_name_looks_again(
    store: CountingStore, table: RouteTable
) -> None:
    routing = Routing(table)
    with pytest.raises(NotFound):
        await call(routing, "/r/pay/x")
    await store.record_put("routes", "pay", routes.encode(PAY), replace=False)
    await asyncio.sleep(RECHECK_EVERY * 1.5)

    assert (await call(routing, "/r/pay/x")).route == PAY


async def service(
    store: CountingStore, table: RouteTable, fake: FakeClock
) -> tuple[FleetService, asyncio.Queue[Heartbeat]]:
    """A FleetService whose heartbeats are also queued for the test."""
    beats: asyncio.Queue[Heartbeat] = asyncio.Queue()
    put = store.fleet_put

    async def spy(beat: Heartbeat, keep: float) -> None:
        beats.put_nowait(beat)
        await put(beat, keep)

    store.fleet_put = spy  # type: ignore[method-assign]
    fleet = FleetService(
        store,
        {"routes": table},
        listen="http://127.0.0.1:8742",
        data_dir=None,
        started_at=fake.t - 5,
        jobs_leased=lambda: 3,
        clock=fake.clock(),
        interval=NEVER,
    )
    return fleet, beats


async def test_the_heartbeat_says_who_runs_what(
    store: CountingStore, table: RouteTable, fake: FakeClock
) -> None:
    fleet, beats = await service(store, table, fake)
    await fleet.start()
    try:
        first = await asyncio.wait_for(beats.get(), 5)
        fleet.observe(None)  # type: ignore[arg-type]  # only counted
        fleet.observe(None)  # type: ignore[arg-type]
        listed = await store.fleet_list()
    finally:
        await fleet.stop()

    assert listed == [first]
    assert first.id == fleet.id and first.listen == "http://127.0.0.1:8742"
    assert first.started_at == fake.t - 5 and first.last_seen == fake.t
    assert first.records == {"routes": table.version} and first.jobs_leased == 3
    assert fleet.heartbeat().requests == 2
    # A clean stop takes it off the list.
    assert await store.fleet_list() == []


async def test_a_notice_reloads_its_kind_and_beats_at_once(
    store: CountingStore, table: RouteTable, fake: FakeClock
) -> None:
    fleet, beats = await service(store, table, fake)
    await fleet.start()
    try:
        await asyncio.wait_for(beats.get(), 5)
        await store.record_put("routes", "pay", routes.encode(PAY), replace=False)
        version = await store.records_version("routes")

        # The listener subscribes in the background: notify until it is heard.
        async with asyncio.timeout(5):
            heard = 0
            while not heard:
                await asyncio.sleep(0.01)
                heard = await store.fleet_notify("routes")
            beat = await beats.get()
    finally:
        await fleet.stop()

    assert beat.records["routes"] == version
    assert table.get("pay") == PAY
