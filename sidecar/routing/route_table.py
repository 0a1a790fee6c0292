"""The sidecar's table of stored routes: a RecordTable of kind "routes" (SPEC §4)."""

from __future__ import annotations

from sidecar.record_table import RecordTable
from sidecar.routing import routes
from sidecar.routing.routes import Route
from sidecar.store.records import NamedRecordStore


def decode_route(name: str, data: bytes) -> Route:
    """The route stored under `name`; ValueError when it names itself otherwise."""
    route = routes.decode(data)
    if route.name != name:
        raise ValueError("stored under another name")
    return route


class RouteTable(RecordTable[Route]):
    """Every route in `store`, kept fresh by polling its version."""

    def __init__(self, store: NamedRecordStore, interval: float = 0.5) -> None:
        super().__init__(store, "routes", decode_route, interval=interval)
