"""Opening, closing and health, the same on every backend (conftest `store`)."""

from __future__ import annotations

import pytest

from sidecar.store.base import Store
from tests.sidecar.store.conftest import FALLS_BACK_BACKENDS

STORE_BACKENDS = FALLS_BACK_BACKENDS
#: The name each backend reports: the resilient store is Redis to its users.
BACKEND_NAMES = {"resilient": "redis", "degraded": "redis", "cluster": "redis"}


async def test_an_open_store_names_its_backend_and_is_healthy_unless_degraded(
    store: Store, request: pytest.FixtureRequest
) -> None:
    name = request.node.callspec.params["store"]
    health = store.health()

    assert health.backend == BACKEND_NAMES.get(name, name)
    if name == "degraded":
        assert not health.ok
        assert health.reason is not None
        assert health.reason.startswith("redis unreachable: ")
        assert "no-redis.sock" not in health.reason  # never where Redis lives
    else:
        assert health.ok
        assert health.reason is None


async def test_closing_twice_is_harmless(store: Store) -> None:
    await store.close()  # the fixture closes it again
