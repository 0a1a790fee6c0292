"""The fleet, the same on every backend (conftest `store`): heartbeats put,
replaced, listed until their time is up and removed; change notices reach
this store's listeners; and on a shared backend another store (the CLI)
lists what a sidecar put, which is how `mirapi sidecar list` finds it.
"""

from __future__ import annotations

import asyncio

import pytest

from sidecar.store.base import Store
from sidecar.store.fleet import GONE_AFTER, Heartbeat, decode, encode, is_gone
from tests.sidecar.store.conftest import SHARED_BACKENDS
from tests.support.clock import FakeClock

KEEP = 3600.0


def beat(sidecar_id: str, last_seen: float, **records: int) -> Heartbeat:
    return Heartbeat(
        id=sidecar_id,
        host="h1",
        pid=4242,
        listen="http://127.0.0.1:8742",
        version="0.1.0",
        started_at=last_seen - 10,
        last_seen=last_seen,
        records=records,
        requests=7,
        jobs_leased=2,
    )


async def test_a_new_store_lists_no_sidecar(store: Store) -> None:
    assert await store.fleet_list() == []


async def test_a_heartbeat_is_listed_with_every_field(store: Store, fake: FakeClock) -> None:
    sent = beat("a1", fake.t, routes=3, keys=1, secrets=0)
    await store.fleet_put(sent, KEEP)

    assert await store.fleet_list() == [sent]


async def test_the_next_heartbeat_replaces_the_last(store: Store, fake: FakeClock) -> None:
    await store.fleet_put(beat("a1", fake.t, routes=1), KEEP)
    fake.advance(2)
    later = beat("a1", fake.t, routes=2)
    await store.fleet_put(later, KEEP)
    await store.fleet_put(beat("b2", fake.t), KEEP)

    assert [b.id for b in await store.fleet_list()] == ["a1", "b2"]
    assert (await store.fleet_list())[0] == later


async def test_a_heartbeat_is_listed_until_its_keep_runs_out(store: Store, fake: FakeClock) -> None:
    await store.fleet_put(beat("old", fake.t), 60)
    fake.advance(59)
    await store.fleet_put(beat("new", fake.t), 60)
    assert [b.id for b in await store.fleet_list()] == ["new", "old"]

    fake.advance(1)

    assert [b.id for b in await store.fleet_list()] == ["new"]


async def test_a_removed_sidecar_is_no_longer_listed(store: Store, fake: FakeClock) -> None:
    await store.fleet_put(beat("a1", fake.t), KEEP)
    await store.fleet_put(beat("b2", fake.t), KEEP)

    await store.fleet_remove("a1")
    await store.fleet_remove("never-was")

    assert [b.id for b in await store.fleet_list()] == ["b2"]


async def test_a_notice_reaches_a_listener(store: Store) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = asyncio.create_task(store.fleet_listen(heard.put_nowait))
    try:
        # A subscription takes a round trip: notify until one is heard.
        async with asyncio.timeout(5):
            reached = 0
            while not reached:
                await asyncio.sleep(0.01)  # the store has no "subscribed" event
                reached = await store.fleet_notify("keys")
            assert reached == 1
            assert await heard.get() == "keys"
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)

    # Cancelled: nobody listens any more.
    assert await store.fleet_notify("routes") == 0


async def test_a_notice_with_no_listener_reaches_none(store: Store) -> None:
    assert await store.fleet_notify("secrets") == 0


@pytest.mark.parametrize("store", SHARED_BACKENDS, indirect=True)
async def test_another_store_lists_the_sidecars_heartbeat(
    store: Store, other: Store, fake: FakeClock
) -> None:
    sent = beat("a1", fake.t, routes=5)
    await store.fleet_put(sent, KEEP)

    assert await other.fleet_list() == [sent]


def test_a_heartbeat_round_trips_and_bad_data_is_refused() -> None:
    sent = beat("a1", 1000.5, routes=1, keys=2)
    assert decode(encode(sent)) == sent
    for bad in (b"nope", b"[]", b'{"id": 1}', encode(sent).replace(b'"pid":4242', b'"pid":"x"')):
        with pytest.raises(ValueError):
            decode(bad)


def test_a_sidecar_is_gone_after_fifteen_silent_seconds() -> None:
    assert GONE_AFTER == 15.0
    assert not is_gone(beat("a1", 100.0), now=114.9)
    assert is_gone(beat("a1", 100.0), now=115.0)
    assert not is_gone(beat("a1", 100.0), now=109.0, gone_after=10)
