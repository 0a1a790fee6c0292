"""Changes in force when the command returns, and the fleet (issue 16, SPEC §11).

Three real sidecars started by the real CLI: two sharing one private
redis-server (tests/support/redis.py), one on its own embedded store. The
upstream is in this process on 127.0.0.1. No test sleeps between a command
and the request that relies on it: the command's return is the promise.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import WAIT, Cli, kill_leftover, run_cli
from tests.support.upstream import Upstream

PASSPHRASE = "e2e passphrase for the fleet"
SECRET_VALUE = "sk_live_FleetSecretValue42"
#: SPEC §11: one silent for 15 s is gone; the issue asks to see it within 20 s.
GONE_WITHIN = 20.0


@dataclass
class Sidecar:
    cli: Cli
    address: str
    pid: int


@dataclass
class Fleet:
    """Two sidecars on one Redis, one on the embedded store, and a CLI for each store."""

    redis_url: str
    shared: Cli  # the CLI on the Redis store (its own data dir, no sidecar)
    on_redis: list[Sidecar]
    embedded: Sidecar

    async def mirapi(
        self, cli: Cli, *args: str, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """`mirapi ARGS` in a thread, so the upstream in this loop keeps answering."""
        env = {**cli.env, "MIRAPI_MASTER_KEY": PASSPHRASE}
        if cli is self.shared or any(s.cli is cli for s in self.on_redis):
            env["MIRAPI_REDIS"] = self.redis_url
        return await asyncio.to_thread(run_cli, env, args, stdin=stdin)

    async def on_redis_store(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        done = await self.mirapi(self.shared, *args, stdin=stdin)
        assert done.returncode == 0, done.stderr
        return done

    async def on_embedded_store(
        self, *args: str, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        done = await self.mirapi(self.embedded.cli, *args, stdin=stdin)
        assert done.returncode == 0, done.stderr
        return done

    @property
    def all(self) -> list[Sidecar]:
        return [*self.on_redis, self.embedded]


def _start(cli: Cli, redis_url: str | None) -> Sidecar:
    env = {"MIRAPI_MASTER_KEY": PASSPHRASE}
    if redis_url is not None:
        env["MIRAPI_REDIS"] = redis_url
    done = cli("sidecar", "start", "--listen", "127.0.0.1:0", "--allow-private", "--unlock", **env)
    assert done.returncode == 0, done.stderr
    state = cli.state()
    return Sidecar(cli=cli, address=str(state["address"]), pid=int(state["pid"]))


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str) -> Iterator[Fleet]:
    config = tmp_path / "config.toml"
    config.write_text("")
    clis = [Cli(tmp_path / name, config) for name in ("a", "b", "embedded", "cli")]
    for cli in clis:
        cli.env.pop("MIRAPI_MASTER_KEY", None)
        cli.env.pop("MIRAPI_REDIS", None)
    try:
        made = Fleet(
            redis_url=redis_url,
            shared=clis[3],
            on_redis=[_start(clis[0], redis_url), _start(clis[1], redis_url)],
            embedded=_start(clis[2], None),
        )
        yield made
    finally:
        for cli in clis[:3]:
            if cli.state_file.exists():
                cli("sidecar", "stop")
                kill_leftover(cli.state_file)


async def test_a_route_serves_everywhere_when_add_returns_and_404s_when_rm_returns(
    fleet: Fleet, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    added = await fleet.on_redis_store("routes", "add", "pay", "--endpoint", upstream.url)
    assert "route 'pay' saved: priority, 1 endpoint; in force on 2 sidecars" in added.stdout
    added = await fleet.on_embedded_store("routes", "add", "pay", "--endpoint", upstream.url)
    assert "in force on 1 sidecar" in added.stdout

    for sidecar in fleet.all:
        served = await http.get(f"{sidecar.address}/r/pay/charges")
        assert served.status_code == 200, (sidecar.address, served.text)
    assert [seen.path_qs for seen in upstream.seen] == ["/charges"] * 3

    removed = await fleet.on_redis_store("routes", "rm", "pay", "--json")
    assert json.loads(removed.stdout) == {
        "route": "pay",
        "removed": True,
        "sidecars": {"live": 2, "acknowledged": 2, "not_acknowledged": []},
    }
    await fleet.on_embedded_store("routes", "rm", "pay")

    for sidecar in fleet.all:
        gone = await http.get(f"{sidecar.address}/r/pay/charges")
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "route_not_found"
    assert len(upstream.seen) == 3


async def test_a_revoked_key_is_refused_everywhere_the_moment_revoke_returns(
    fleet: Fleet, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    async def keys(create: Any) -> tuple[str, str, str]:
        first = json.loads((await create("keys", "create", "--json")).stdout)
        kept = json.loads((await create("keys", "create", "--json")).stdout)
        assert first["sidecars"]["acknowledged"] == first["sidecars"]["live"] >= 1
        return first["id"], first["key"], kept["key"]

    shared = await keys(fleet.on_redis_store)
    local = await keys(fleet.on_embedded_store)
    target = {"X-Target-URL": upstream.url + "/me"}
    pairs = [(s, shared) for s in fleet.on_redis] + [(fleet.embedded, local)]
    for sidecar, (_, key, _) in pairs:
        allowed = await http.get(sidecar.address, headers={**target, "X-MirApi-Key": key})
        assert allowed.status_code == 200, allowed.text
        # Keys are in use: no key at all is refused, even from loopback.
        assert (await http.get(sidecar.address, headers=target)).status_code == 401

    revoked = await fleet.on_redis_store("keys", "revoke", shared[0])
    assert f"client key {shared[0]} revoked; in force on 2 sidecars" in revoked.stdout
    await fleet.on_embedded_store("keys", "revoke", local[0])

    for sidecar, (_, key, kept) in pairs:
        refused = await http.get(sidecar.address, headers={**target, "X-MirApi-Key": key})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        still = await http.get(sidecar.address, headers={**target, "X-MirApi-Key": kept})
        assert still.status_code == 200


async def test_a_secret_is_injected_on_the_next_call_and_never_after_rm(
    fleet: Fleet, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    add = ("secrets", "add", "up", "--host", "127.0.0.1")
    added = await fleet.on_redis_store(*add, stdin=SECRET_VALUE + "\n")
    assert "in force on 2 sidecars" in added.stdout
    await fleet.on_embedded_store(*add, stdin=SECRET_VALUE + "\n")
    target = {"X-Target-URL": upstream.url + "/charge"}

    for sidecar in fleet.all:
        assert (await http.get(sidecar.address, headers=target)).status_code == 200
    assert [s.headers.get("authorization") for s in upstream.seen] == [f"Bearer {SECRET_VALUE}"] * 3

    await fleet.on_redis_store("secrets", "rm", "up")
    await fleet.on_embedded_store("secrets", "rm", "up")
    for sidecar in fleet.all:
        assert (await http.get(sidecar.address, headers=target)).status_code == 200
    assert [s.headers.get("authorization") for s in upstream.seen[3:]] == [None] * 3


async def test_sidecar_list_shows_the_fleet_and_a_killed_sidecar_as_gone(
    fleet: Fleet, http: httpx.AsyncClient
) -> None:
    a, b = fleet.on_redis
    listed = await fleet.on_redis_store("sidecar", "list", "--json")
    rows = {row["listen"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {a.address, b.address}
    for sidecar in (a, b):
        row = rows[sidecar.address]
        assert row["state"] == "live" and row["pid"] == sidecar.pid
        assert set(row) == {
            "id", "state", "host", "pid", "listen", "version", "started_at", "last_seen",
            "records", "requests", "jobs_leased",
        }  # fmt: skip
        assert set(row["records"]) == {"routes", "keys", "secrets", "llm_budgets"}
        assert row["started_at"].endswith("Z") and row["jobs_leased"] == 0
    # The embedded store lists its own sidecar only.
    local = await fleet.on_embedded_store("sidecar", "list", "--json")
    assert [row["listen"] for row in json.loads(local.stdout)] == [fleet.embedded.address]

    os.kill(b.pid, signal.SIGKILL)
    deadline = time.monotonic() + GONE_WITHIN
    while True:
        rows = {row["listen"]: row for row in json.loads(
            (await fleet.on_redis_store("sidecar", "list", "--json")).stdout
        )}  # fmt: skip
        if rows[b.address]["state"] == "gone":
            break
        assert time.monotonic() < deadline, "the killed sidecar is still listed as live"
        await asyncio.sleep(1)
    assert rows[a.address]["state"] == "live"
    # A gone sidecar is not waited for: the change is in force on the one left.
    added = await fleet.on_redis_store("routes", "add", "pay", "--endpoint", "http://127.0.0.1/")
    assert "in force on 1 sidecar" in added.stdout and added.stderr == ""


async def test_a_sidecar_that_does_not_acknowledge_is_named_and_the_change_is_stored(
    fleet: Fleet, upstream: Upstream
) -> None:
    b = fleet.on_redis[1]
    os.kill(b.pid, signal.SIGSTOP)  # alive, listed, but answering nothing
    try:
        started = time.monotonic()
        done = await fleet.on_redis_store(
            "routes", "add", "pay", "--endpoint", upstream.url, "--json"
        )
        waited = time.monotonic() - started
    finally:
        os.kill(b.pid, signal.SIGCONT)
    answer = json.loads(done.stdout)
    assert answer["sidecars"]["live"] == 2 and answer["sidecars"]["acknowledged"] == 1
    assert len(answer["sidecars"]["not_acknowledged"]) == 1
    assert 5 <= waited < WAIT
    assert f"pid {b.pid}, {b.address}" in done.stderr
    assert "the change is stored" in done.stderr
    listed = await fleet.on_redis_store("routes", "list", "--json")
    assert [route["name"] for route in json.loads(listed.stdout)] == ["pay"]


async def test_a_store_that_is_down_fails_the_command_and_writes_nothing(
    fleet: Fleet, tmp_path: Path
) -> None:
    down = f"unix://{tmp_path / 'no-redis.sock'}"
    done = await fleet.mirapi(
        fleet.shared, "routes", "add", "pay", "--endpoint", "http://127.0.0.1/", "--redis", down
    )
    assert done.returncode != 0
    assert "the store is unavailable" in done.stderr and "Traceback" not in done.stderr
    listed = await fleet.on_redis_store("routes", "list", "--json")
    assert json.loads(listed.stdout) == []
