"""The smart cache capability, the same on every backend (conftest `store`),
the resilient store with Redis lost included. Time moves on the FakeClock.
"""

from __future__ import annotations

from sidecar.store.base import Store, StoredResponse
from tests.sidecar.store.conftest import FALLS_BACK_BACKENDS
from tests.support.clock import FakeClock

#: Falls back to local state under the resilient store: it runs "degraded" too.
STORE_BACKENDS = FALLS_BACK_BACKENDS


def response(fake: FakeClock, body: bytes = b'{"ok":true}', ttl: float = 300.0) -> StoredResponse:
    return StoredResponse(
        201, (("content-type", "application/json"), ("x-id", "7")), body, fake.t, fake.t + ttl
    )


# -- StoredResponse ------------------------------------------------------------


def test_encoding_round_trips_binary_bodies_and_headers() -> None:
    entry = StoredResponse(
        200,
        (("content-type", "application/octet-stream"), ("x-note", "café\nsecond"), ("a", "")),
        b"\x00\xff\n\n{binary}\r\n" + bytes(range(256)),
        1000.25,
        1300.5,
    )
    assert StoredResponse.decode(entry.encode()) == entry


def test_encoding_round_trips_an_empty_body() -> None:
    entry = StoredResponse(204, (), b"", 1.0, 2.0)
    assert StoredResponse.decode(entry.encode()) == entry


# -- smart cache ---------------------------------------------------------------


async def test_cache_returns_what_was_put(store: Store, fake: FakeClock) -> None:
    entry = response(fake, body=b"\x00binary\xff")
    await store.cache_put("c1", entry)
    assert await store.cache_get("c1") == entry
    assert await store.cache_get("c2") is None


async def test_cache_entry_lives_until_it_expires(store: Store, fake: FakeClock) -> None:
    await store.cache_put("c1", response(fake, ttl=60))
    fake.advance(59)
    assert await store.cache_get("c1") is not None
    fake.advance(1)
    assert await store.cache_get("c1") is None


async def test_cache_put_overwrites(store: Store, fake: FakeClock) -> None:
    await store.cache_put("c1", response(fake, body=b"old"))
    fake.advance(5)
    newer = response(fake, body=b"new")
    await store.cache_put("c1", newer)
    assert await store.cache_get("c1") == newer


async def test_cache_never_returns_an_entry_put_already_expired(
    store: Store, fake: FakeClock
) -> None:
    await store.cache_put("c1", StoredResponse(200, (), b"x", fake.t - 10, fake.t - 1))
    assert await store.cache_get("c1") is None
