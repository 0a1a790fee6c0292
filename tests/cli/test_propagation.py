"""What a changing command says about the sidecars (mirapi_cli/propagation.py):
how many took the change, and which did not, by id, host, pid and address."""

from __future__ import annotations

from mirapi_cli.propagation import InForce
from sidecar.store.fleet import Heartbeat


def beat(sidecar_id: str, pid: int) -> Heartbeat:
    return Heartbeat(
        id=sidecar_id,
        host="web-1",
        pid=pid,
        listen=f"http://127.0.0.1:{8000 + pid}",
        version="0.1.0",
        started_at=1.0,
        last_seen=2.0,
    )


A, B, C = beat("aaaaaaaaaaaa", 1), beat("bbbbbbbbbbbb", 2), beat("cccccccccccc", 3)


def test_all_acknowledged() -> None:
    done = InForce(live=[A, B, C], acknowledged=[A, B, C])
    assert done.summary() == "in force on 3 sidecars"
    assert done.sentence() == "In force on 3 sidecars."
    assert done.warnings() == []
    assert done.as_json() == {"live": 3, "acknowledged": 3, "not_acknowledged": []}
    assert InForce(live=[A], acknowledged=[A]).summary() == "in force on 1 sidecar"


def test_the_ones_that_did_not_are_named_and_the_change_is_said_to_be_stored() -> None:
    done = InForce(live=[A, B, C], acknowledged=[A])
    assert done.summary() == "in force on 1 of 3 sidecars"
    assert done.as_json()["not_acknowledged"] == [B.id, C.id]
    warned = "\n".join(done.warnings())
    assert f"sidecar {B.id} (web-1, pid 2, http://127.0.0.1:8002)" in warned
    assert f"sidecar {C.id} (web-1, pid 3, http://127.0.0.1:8003)" in warned
    assert "the change is stored" in warned


def test_no_sidecar_running() -> None:
    done = InForce()
    assert done.summary().startswith("no sidecar runs on this store")
    assert done.as_json() == {"live": 0, "acknowledged": 0, "not_acknowledged": []}


def test_a_store_lost_after_the_write_is_reported_not_fatal() -> None:
    done = InForce(unknown="redis unreachable: connection refused")
    assert "could not be checked" in done.summary()
    assert done.as_json()["unknown"] == "redis unreachable: connection refused"
    assert "the change is stored" in done.warnings()[0]
