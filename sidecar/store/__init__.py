"""Shared state behind one interface (`base.Store`, one Protocol per capability),
chosen by URL scheme (SPEC §7).

No `redis` setting: the embedded store (memory + SQLite in the data dir).
`redis://`, `rediss://`, `unix://` (one server), `redis+cluster://`,
`rediss+cluster://` (a Redis Cluster), `redis+sentinel://` (a Sentinel-managed
primary; see redis.connect): Redis, falling back to local memory while Redis
is unreachable, so a proxied request never fails because of it.
Backends are imported here lazily: a sidecar on the embedded store never
imports redis.
"""

from __future__ import annotations

from sidecar import paths
from sidecar.clock import SYSTEM_CLOCK, Clock
from sidecar.config import Settings
from sidecar.store.base import Store


def store_for(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> Store:
    """The store `settings` asks for, not yet opened."""
    if settings.redis is None:
        from sidecar.store.embedded import EmbeddedStore

        database = paths.database_file(paths.ensure_dir(settings.data_dir))
        return EmbeddedStore(database, clock, settings.cache_max_bytes)
    from sidecar.store.memory import MemoryStore
    from sidecar.store.redis import RedisStore
    from sidecar.store.resilient import ResilientStore

    local = MemoryStore(clock, settings.cache_max_bytes)
    # Its policy methods are made at import time; mypy sees them as the
    # capability Protocols' (see resilient), hence "abstract".
    return ResilientStore(RedisStore(settings.redis, clock), local, clock)  # type: ignore[abstract]
