"""Stored routes, the same on every backend (conftest `store`): put-if-absent
or replace, delete, a version that moves on every write and only then, and
writes that another store on the same file or server sees at once, which is
how `mirapi routes` reaches a running sidecar.
"""

from __future__ import annotations

import pytest

from sidecar.routing import routes
from sidecar.routing.routes import Endpoint, Route, RouteDefaults
from sidecar.store.base import Store
from tests.sidecar.store.conftest import SHARED_BACKENDS

#: Opaque bytes: the store must keep them exactly, a NUL and invalid UTF-8 too.
BINARY = b'{"name":"x"}\x00\xff\xfe\n'


async def test_a_new_store_has_no_routes(store: Store) -> None:
    version, stored = await store.records_load("routes")
    assert stored == {}
    assert await store.records_version("routes") == version


async def test_a_put_route_is_loaded_back_byte_for_byte(store: Store) -> None:
    assert await store.record_put("routes", "payments", BINARY, replace=False)
    assert await store.record_put("routes", "llm", b"second", replace=False)

    _, stored = await store.records_load("routes")
    assert stored == {"payments": BINARY, "llm": b"second"}


async def test_an_encoded_route_round_trips(store: Store) -> None:
    route = Route(
        name="stripe",
        endpoints=(
            Endpoint("https://api.stripe.com", (("Stripe-Version", "2024-06-20"),), 5.0),
            Endpoint("https://backup.example.com/v1"),
        ),
        strategy="priority",
        defaults=RouteDefaults((("X-Retry-Count", "2"), ("X-Smart-Cache", "5m"))),
        secret="stripe",
    )
    await store.record_put("routes", route.name, routes.encode(route), replace=False)

    _, stored = await store.records_load("routes")
    assert routes.decode(stored["stripe"]) == route


async def test_a_put_without_replace_keeps_the_existing_route(store: Store) -> None:
    await store.record_put("routes", "payments", b"first", replace=False)
    before = await store.records_version("routes")

    assert not await store.record_put("routes", "payments", b"second", replace=False)

    assert await store.records_load("routes") == (before, {"payments": b"first"})


async def test_a_put_with_replace_overwrites(store: Store) -> None:
    await store.record_put("routes", "payments", b"first", replace=False)

    assert await store.record_put("routes", "payments", b"second", replace=True)
    assert await store.record_put("routes", "new", b"fresh", replace=True)  # replace also creates

    _, stored = await store.records_load("routes")
    assert stored == {"payments": b"second", "new": b"fresh"}


async def test_delete_removes_only_that_route(store: Store) -> None:
    await store.record_put("routes", "a", b"1", replace=False)
    await store.record_put("routes", "b", b"2", replace=False)

    assert await store.record_delete("routes", "a")

    _, stored = await store.records_load("routes")
    assert stored == {"b": b"2"}


async def test_deleting_a_missing_route_changes_nothing(store: Store) -> None:
    await store.record_put("routes", "a", b"1", replace=False)
    before = await store.records_version("routes")

    assert not await store.record_delete("routes", "missing")

    assert await store.records_load("routes") == (before, {"a": b"1"})


async def test_the_version_moves_on_every_write(store: Store) -> None:
    seen = [await store.records_version("routes")]
    await store.record_put("routes", "a", b"1", replace=False)
    seen.append(await store.records_version("routes"))
    await store.record_put("routes", "a", b"1", replace=True)  # the same bytes: still a write
    seen.append(await store.records_version("routes"))
    await store.record_put("routes", "b", b"2", replace=False)
    seen.append(await store.records_version("routes"))
    await store.record_delete("routes", "a")
    seen.append(await store.records_version("routes"))
    await store.record_delete("routes", "b")  # the last one: the version must survive it
    seen.append(await store.records_version("routes"))

    assert len(set(seen)) == len(seen), seen
    assert (await store.records_load("routes"))[0] == seen[-1]


@pytest.mark.parametrize("store", SHARED_BACKENDS, indirect=True)
async def test_another_store_on_the_same_backend_sees_each_write(
    store: Store, other: Store
) -> None:
    seen = await other.records_version("routes")

    assert await store.record_put("routes", "payments", b"v1", replace=False)
    assert await other.records_version("routes") != seen
    assert await other.records_load("routes") == (
        await store.records_version("routes"),
        {"payments": b"v1"},
    )
    # The other way too, and put-if-absent holds across them.
    assert not await other.record_put("routes", "payments", b"lost", replace=False)
    assert await other.record_put("routes", "payments", b"v2", replace=True)
    assert (await store.records_load("routes"))[1] == {"payments": b"v2"}

    seen = await other.records_version("routes")
    assert await store.record_delete("routes", "payments")
    assert await other.records_version("routes") != seen
    assert await other.records_load("routes") == (await store.records_version("routes"), {})
    assert not await other.record_delete("routes", "payments")


async def test_each_kind_of_record_is_its_own_namespace(store: Store) -> None:
    """Routes, client keys and secrets share the methods, never their names or versions."""
    assert await store.record_put("routes", "stripe", b"route", replace=False)
    keys_version = await store.records_version("keys")
    # The same name in another kind is another record.
    assert await store.record_put("secrets", "stripe", b"secret", replace=False)
    assert (await store.records_load("routes"))[1] == {"stripe": b"route"}
    assert (await store.records_load("secrets"))[1] == {"stripe": b"secret"}
    assert await store.records_version("keys") == keys_version
    assert (await store.records_load("keys"))[1] == {}
    # Deleting from one kind leaves the other.
    assert await store.record_delete("secrets", "stripe")
    assert (await store.records_load("routes"))[1] == {"stripe": b"route"}
    assert not await store.record_delete("keys", "stripe")
