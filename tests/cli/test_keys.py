"""`mirapi keys`: create, list and revoke through the real CLI.

Each call is a real `mirapi` process on the test's data dir (the embedded
store's SQLite), or on a private redis-server with `--redis`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from sidecar.config import Settings
from sidecar.store import store_for
from tests.support.cli import run_mirapi

KEY = re.compile(r"mk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


class Run:
    """One finished `mirapi` process."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


async def mirapi(data_dir: Path, *args: str) -> Run:
    code, out, err = await run_mirapi(data_dir, *args)
    return Run(code, out.decode(), err)


def every_byte(data_dir: Path) -> bytes:
    """Every file under `data_dir`, concatenated (the SQLite file, its WAL, ...)."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file())


async def test_create_prints_the_key_once_and_list_shows_id_name_and_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = await mirapi(data, "keys", "create", "--name", "ci runner", "--json")
    created = made.json()
    assert set(created) == {"id", "key", "name", "sidecars"}
    # No sidecar runs on this data dir: nothing to wait for (SPEC §11).
    assert created["sidecars"] == {"live": 0, "acknowledged": 0, "not_acknowledged": []}
    assert KEY.fullmatch(created["key"])
    assert created["key"][3:15] == created["id"]
    assert created["name"] == "ci runner"

    human = await mirapi(data, "keys", "create")
    assert human.code == 0, human.err
    (text,) = KEY.findall(human.out)
    assert "cannot be shown again" in human.out
    assert "X-MirApi-Key" in human.out

    listed, table = await asyncio.gather(
        mirapi(data, "keys", "list", "--json"), mirapi(data, "keys", "list")
    )
    rows = listed.json()
    assert sorted(r["id"] for r in rows) == sorted([created["id"], text[3:15]])
    assert all(set(r) == {"id", "name", "created"} for r in rows)
    assert {r["name"] for r in rows} == {"ci runner", None}
    assert all(isinstance(r["created"], int) for r in rows)
    # Piped without --json: JSON lines, the same rows (the table is for terminals).
    assert table.code == 0
    assert [json.loads(line) for line in table.out.splitlines()] == rows
    for shown in (listed, table):
        assert "mk_" not in shown.out + shown.err

    # Only hashes reach the disk.
    stored = every_byte(data)
    for key in (created["key"], text):
        assert key.encode() not in stored
        assert key[16:].encode() not in stored
        assert hashlib.sha256(key.encode()).hexdigest().encode() in stored


async def test_revoke_removes_a_key_and_an_unknown_id_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = (await mirapi(data, "keys", "create", "--json")).json()
    second = (await mirapi(data, "keys", "create", "--json")).json()

    revoked = await mirapi(data, "keys", "revoke", first["id"])
    assert revoked.code == 0, revoked.err
    assert f"client key {first['id']} revoked" in revoked.out
    assert "no client keys left" not in revoked.err
    assert [r["id"] for r in (await mirapi(data, "keys", "list", "--json")).json()] == [
        second["id"]
    ]

    again = await mirapi(data, "keys", "revoke", first["id"])
    assert (again.code, again.err) == (1, f"mirapi: error: no client key with id {first['id']!r}\n")

    last = await mirapi(data, "keys", "revoke", second["id"])
    assert last.code == 0, last.err
    assert "no client keys left" in last.err
    listed, empty = await asyncio.gather(
        mirapi(data, "keys", "list", "--json"), mirapi(data, "keys", "list")
    )
    assert listed.json() == []
    assert empty.out == "" and "no client keys" in empty.err and "loopback" in empty.err


async def test_revoke_given_the_key_itself_refuses_without_echoing_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = (await mirapi(data, "keys", "create", "--json")).json()

    pasted, cut, malformed = await asyncio.gather(
        mirapi(data, "keys", "revoke", made["key"]),
        mirapi(data, "keys", "revoke", made["key"][:30]),
        mirapi(data, "keys", "revoke", "not-an-id"),
    )
    for refused in (pasted, cut):
        assert refused.code == 1
        assert "not the key itself" in refused.err
        assert made["key"][16:24] not in refused.err + refused.out
    assert malformed.code == 1
    assert "no client key with id 'not-an-id'" in malformed.err
    # Nothing was revoked.
    assert [r["id"] for r in (await mirapi(data, "keys", "list", "--json")).json()] == [made["id"]]


async def test_a_bad_name_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    runs = await asyncio.gather(
        mirapi(data, "keys", "create", "--name", "x" * 65),
        mirapi(data, "keys", "create", "--name", "two\nlines"),
        mirapi(data, "keys", "create", "--name", ""),
    )
    for run in runs:
        assert run.code == 1
        assert run.err.startswith("mirapi: error: --name: ")
        assert run.err.count("\n") == 1
        assert "mk_" not in run.out
    assert "two\nlines" not in runs[1].err
    assert (await mirapi(data, "keys", "list", "--json")).json() == []
    ok = await mirapi(data, "keys", "create", "--name", "é" * 64, "--json")
    assert ok.json()["name"] == "é" * 64


async def test_an_unreadable_record_is_skipped_with_a_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = (await mirapi(data, "keys", "create", "--json")).json()
    store = store_for(Settings(data_dir=data))
    await store.open()
    try:
        assert await store.record_put("keys", "0123456789ab", b"secret-looking junk", False)
    finally:
        await store.close()

    listed = await mirapi(data, "keys", "list", "--json")
    assert [r["id"] for r in listed.json()] == [made["id"]]
    assert "'0123456789ab'" in listed.err and "skipped" in listed.err
    assert "junk" not in listed.err


async def test_keys_are_shared_through_redis(tmp_path: Path, redis_url: str) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    made = (
        await mirapi(one, "keys", "create", "--name", "shared", "--json", "--redis", redis_url)
    ).json()

    shared, local = await asyncio.gather(
        mirapi(two, "keys", "list", "--json", "--redis", redis_url),
        mirapi(one, "keys", "list", "--json"),
    )
    assert [r["id"] for r in shared.json()] == [made["id"]]
    assert local.json() == []

    revoked = await mirapi(two, "keys", "revoke", made["id"], "--redis", redis_url)
    assert revoked.code == 0, revoked.err
    assert (await mirapi(one, "keys", "list", "--json", "--redis", redis_url)).json() == []


async def test_every_command_takes_the_store_options(tmp_path: Path) -> None:
    commands = ("create", "list", "revoke")
    helps = await asyncio.gather(
        *(mirapi(tmp_path / "data", "keys", command, "--help") for command in commands)
    )
    for command, shown in zip(commands, helps, strict=True):
        assert shown.code == 0, command
        for option in ("--data-dir", "--config", "--redis"):
            assert option in shown.out, (command, option)
