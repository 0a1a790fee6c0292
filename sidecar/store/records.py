"""The named records capability: routes, client keys, secrets, LLM budget scopes (SPEC §4, §6).

Durable: a write returns only once it is committed (SQLite) or acknowledged
(Redis); StoreUnavailable otherwise. Records are written by commands
(`mirapi routes`, `keys`, `secrets`), not on the request path; sidecars read
them through a RecordTable that polls `records_version`. `kind` is one of
RECORD_KINDS; each kind has its own names and version.
"""

from __future__ import annotations

from typing import Protocol

#: The kinds of named record the store keeps (`records_*`): each its own
#: namespace with its own version.
RECORD_KINDS = ("routes", "keys", "secrets", "llm_budgets")


class NamedRecordStore(Protocol):
    """Shared only: StoreUnavailable while Redis is lost (every sidecar must agree)."""

    async def records_load(self, kind: str) -> tuple[int, dict[str, bytes]]:
        """Every record of `kind` (name -> data) and the version they are at."""

    async def records_version(self, kind: str) -> int:
        """A number that changes whenever a record of `kind` is written or removed."""

    async def record_put(self, kind: str, name: str, data: bytes, replace: bool) -> bool:
        """Store record `name`; False (nothing written) if it exists and not `replace`."""

    async def record_delete(self, kind: str, name: str) -> bool:
        """Remove record `name`; False when there was none."""
