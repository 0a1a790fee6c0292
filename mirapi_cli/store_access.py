"""Running one operation on the store the sidecar uses, from a command.

`mirapi routes`, `jobs` and `webhooks` work whether or not a sidecar runs:
they open the same store (the data dir's embedded store, or Redis) directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mirapi_cli.errors import CliError
from mirapi_cli.options import load_settings

if TYPE_CHECKING:
    from sidecar.store.base import Store

T = TypeVar("T")


def with_store(
    data_dir: Path | None,
    config: Path | None,
    redis: str | None,
    operation: Callable[[Store], Awaitable[T]],
) -> T:
    """Open the store the sidecar uses, run `operation` on it, close it."""
    from sidecar.errors import StoreUnavailable
    from sidecar.store import store_for

    settings = load_settings(data_dir, config, {"redis": redis} if redis else {})
    # The store logs losing Redis for a sidecar's log; here the one-line
    # error below says it, and "using local state" would not be true.
    logging.getLogger("mirapi.store").setLevel(logging.ERROR)

    async def run() -> T:
        store = store_for(settings)
        await store.open()
        try:
            return await operation(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StoreUnavailable as error:
        raise CliError(f"the store is unavailable: {error.message}") from None
