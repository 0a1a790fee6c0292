"""The smart cache capability: whole responses kept until they expire (SPEC §2.5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import orjson

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A whole response kept for a cache rescue or an idempotent replay."""

    status: int
    headers: Headers
    body: bytes
    #: Wall-clock seconds when the upstream answered (for the Age header).
    stored_at: float
    #: Wall-clock seconds after which the entry no longer exists.
    expires_at: float

    def encode(self) -> bytes:
        """Compact bytes: a JSON head line, then the raw body."""
        head = orjson.dumps(
            {"s": self.status, "h": self.headers, "t": self.stored_at, "x": self.expires_at}
        )
        return head + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> StoredResponse:
        """The inverse of `encode` (orjson never writes a raw newline)."""
        head, _, body = data.partition(b"\n")
        meta = orjson.loads(head)
        headers = tuple((str(name), str(value)) for name, value in meta["h"])
        return cls(meta["s"], headers, body, meta["t"], meta["x"])

    @property
    def size(self) -> int:
        """Bytes this entry costs, for the cache's memory bound."""
        return len(self.body) + sum(len(n) + len(v) for n, v in self.headers) + 64


class CacheStore(Protocol):
    """On the request path; falls back to local state when Redis is lost."""

    async def cache_get(self, key: str) -> StoredResponse | None:
        """The entry under `key` unless it expired by `now`."""

    async def cache_put(self, key: str, entry: StoredResponse) -> None:
        """Keep `entry` until `entry.expires_at`; may evict others to stay bounded."""
