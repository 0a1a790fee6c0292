"""Client keys end to end (issue 6): real sidecars, a real upstream, the real CLI.

Keys are made and revoked by `mirapi keys` while the sidecar runs; the
sidecar reads them through its polled table, so each change is waited for
within a bound (a poll is 0.5 s). A sidecar may bind 0.0.0.0, but every
connection goes to 127.0.0.1: nothing here talks to a non-loopback address.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cli import Cli, kill_leftover
from tests.support.redis import RedisServer
from tests.support.upstream import Upstream

#: A create or revoke must reach a running sidecar within about a second.
APPLIES_WITHIN = 1.5

NewCli = Callable[[], Cli]


@pytest.fixture
def new_cli(tmp_path: Path) -> Iterator[NewCli]:
    """CLIs on data dirs of their own; every sidecar started on one is stopped at the end."""
    config = tmp_path / "config.toml"
    config.write_text("")
    made: list[Cli] = []

    def make() -> Cli:
        cli = Cli(tmp_path / f"data{len(made)}", config)
        made.append(cli)
        return cli

    yield make
    for cli in made:
        if cli.state_file.exists():
            cli("sidecar", "stop")
            kill_leftover(cli.state_file)


async def run(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    """`mirapi ARGS` in a thread, so the upstream in this loop keeps answering."""
    return await asyncio.to_thread(cli, *args)


async def create_key(cli: Cli, *args: str) -> str:
    done = await run(cli, "keys", "create", "--json", *args)
    assert done.returncode == 0, done.stderr
    key: str = json.loads(done.stdout)["key"]
    return key


async def revoke(cli: Cli, key: str, *args: str) -> None:
    done = await run(cli, "keys", "revoke", key[3:15], *args)
    assert done.returncode == 0, done.stderr


def proxied(
    http: httpx.AsyncClient, sidecar: str, upstream: Upstream
) -> Callable[..., Awaitable[httpx.Response]]:
    """A GET through the sidecar to `upstream`, with the client key given (or none)."""

    async def call(key: str | None = None) -> httpx.Response:
        headers = {"X-Target-URL": upstream.url}
        if key is not None:
            headers["X-MirApi-Key"] = key
        return await http.get(sidecar + "/v1/ping", headers=headers)

    return call


async def until_status(
    call: Callable[[], Awaitable[httpx.Response]], status: int, what: str
) -> httpx.Response:
    """`call()` until it answers `status`; fails after APPLIES_WITHIN seconds."""
    began = time.monotonic()
    while True:
        answer = await call()
        if answer.status_code == status:
            return answer
        waited = time.monotonic() - began
        assert waited < APPLIES_WITHIN, f"{what}: still {answer.status_code} after {waited:.1f}s"
        await asyncio.sleep(0.05)


def assert_unauthorized(answer: httpx.Response) -> None:
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"


def every_byte(data_dir: Path) -> bytes:
    """Every file under the data dir: the SQLite file and its WAL, the sidecar log, ..."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file())


async def test_the_key_lifecycle_and_no_key_text_on_disk(
    new_cli: NewCli, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    cli = new_cli()
    sidecar = cli.start("--allow-private")["address"]
    call = proxied(http, sidecar, upstream)
    # No key yet: a loopback client is served without one.
    assert (await call()).status_code == 200

    first = await create_key(cli, "--name", "app")
    assert_unauthorized(await until_status(call, 401, "a request without a key after create"))
    right = await call(first)
    assert right.status_code == 200
    assert "x-mirapi-key" not in upstream.seen[-1].headers
    second = await create_key(cli)
    await until_status(lambda: call(second), 200, "a second key")
    assert (await call(first)).status_code == 200
    seen = len(upstream.seen)
    wrong_secret = first[:16] + ("A" if first[16] != "A" else "B") + first[17:]
    for wrong in (wrong_secret, "mk_ffffffffffff_" + first[16:], "not a key", first + "x"):
        assert_unauthorized(await call(wrong))
    assert len(upstream.seen) == seen, "a refused request reached the upstream"

    # Probes stay open; the job API is behind the key like any request.
    assert (await http.get(sidecar + "/_mirapi/healthz")).status_code == 200
    assert (await http.get(sidecar + "/_mirapi/livez")).status_code == 200
    assert_unauthorized(await http.get(sidecar + "/_mirapi/jobs/job_nope"))
    with_key = await http.get(sidecar + "/_mirapi/jobs/job_nope", headers={"X-MirApi-Key": first})
    assert with_key.status_code == 404

    await revoke(cli, first)
    assert_unauthorized(await until_status(lambda: call(first), 401, "a revoked key"))
    assert (await call(second)).status_code == 200

    # The last key gone: back to loopback clients without a key.
    await revoke(cli, second)
    await until_status(call, 200, "a request without a key after the last revoke")

    # Stopped, so the log and the database are complete on disk.
    assert (await run(cli, "sidecar", "stop")).returncode == 0
    stored = every_byte(cli.data_dir)
    assert (cli.data_dir / "sidecar.log").stat().st_size > 0
    for key in (first, second):
        assert key.encode() not in stored
        assert key[16:].encode() not in stored, "a key's secret part is on disk"


async def test_a_non_loopback_bind_is_refused_until_a_key_exists(
    new_cli: NewCli, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    cli = new_cli()
    refused = await run(cli, "sidecar", "start", "--listen", "0.0.0.0:0", "--allow-private")
    assert refused.returncode == 1
    assert "mirapi keys create" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not cli.state_file.exists()

    key = await create_key(cli)
    started = await run(cli, "sidecar", "start", "--listen", "0.0.0.0:0", "--allow-private")
    assert started.returncode == 0, started.stderr
    # A wildcard bind is announced (and reached) through loopback.
    sidecar = str(cli.state()["address"])
    assert sidecar.startswith("http://127.0.0.1:")
    call = proxied(http, sidecar, upstream)
    assert_unauthorized(await call())
    assert (await call(key)).status_code == 200


async def test_a_key_made_through_redis_is_enforced_by_a_sidecar_on_that_redis(
    new_cli: NewCli, private_redis: RedisServer, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    sidecar_cli, other = new_cli(), new_cli()
    sidecar = sidecar_cli.start("--allow-private", "--redis", private_redis.url)["address"]
    call = proxied(http, sidecar, upstream)
    assert (await call()).status_code == 200

    # Another data dir: the key reaches the sidecar only through Redis.
    key = await create_key(other, "--redis", private_redis.url)
    await until_status(call, 401, "a request without a key after create on Redis")
    assert (await call(key)).status_code == 200

    await revoke(other, key, "--redis", private_redis.url)
    await until_status(call, 200, "a request without a key after revoke on Redis")


async def test_curl_via_the_sidecar_sends_the_key_from_the_environment(
    new_cli: NewCli, upstream: Upstream
) -> None:
    cli = new_cli()
    cli.start("--allow-private")
    key = await create_key(cli)
    url = upstream.url + "/v1/ping"

    async def curl(**env: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(cli, "curl", url, "--via", "running", "-i", **env)

    refused = await until_refused(curl)
    assert refused.returncode != 0
    served = await curl(MIRAPI_KEY=key)
    assert served.returncode == 0, served.stderr
    assert served.stdout.startswith("HTTP/1.1 200")
    # Never sent on: the upstream sees no client key.
    assert "x-mirapi-key" not in upstream.seen[-1].headers


async def until_refused(
    call: Callable[[], Awaitable[subprocess.CompletedProcess[str]]],
) -> subprocess.CompletedProcess[str]:
    """Call until the sidecar has seen the new key and refuses an unkeyed call."""
    deadline = asyncio.get_running_loop().time() + APPLIES_WITHIN + 5
    while True:
        done = await call()
        if "X-MirApi-Key is required" in done.stderr:
            return done
        assert asyncio.get_running_loop().time() < deadline, done.stdout + done.stderr
        await asyncio.sleep(0.1)
