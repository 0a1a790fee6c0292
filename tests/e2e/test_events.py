"""Events end to end (issue 7): real sidecars, a real upstream, the real CLI.

Sidecars are started by `mirapi sidecar start`; requests go to them over
HTTP from this process, whose event loop also runs the upstream, so CLI
commands run in threads (or as asyncio subprocesses) to let it answer.
`events tail` reads the store the sidecars write (the data dir's SQLite, or
a private redis-server). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import Cli, kill_leftover
from tests.support.redis import RedisServer
from tests.support.upstream import Upstream, reply

#: Events reach the store within the writer's interval (0.25 s); this is
#: the bound on seeing one, generous for a loaded machine.
WITHIN = 10.0
CARD = "4242 4242 4242 4242"


@dataclass
class Node:
    """A data dir with its CLI, and the sidecar started on it."""

    cli: Cli
    url: str = ""

    def start(self, *args: str) -> Node:
        self.url = str(self.cli.start("--allow-private", *args)["address"])
        return self

    async def mirapi(self, *args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.cli, *args)

    async def tail(self, *args: str) -> list[dict[str, Any]]:
        done = await self.mirapi("events", "tail", "--json", *args)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    async def until_event(self, request_id: str, *args: str) -> dict[str, Any]:
        """The event of `request_id` once `events tail` shows it (fails after WITHIN s)."""
        began = time.monotonic()
        while True:
            for line in await self.tail("-n", "100", *args):
                if line["request_id"] == request_id:
                    return line
            assert time.monotonic() - began < WITHIN, f"no event of {request_id} in {WITHIN}s"
            await asyncio.sleep(0.2)


NewNode = Callable[[], Node]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NewNode]:
    """Data dirs, each with its CLI; every sidecar started on one is stopped at the end."""
    config = tmp_path / "config.toml"
    config.write_text("")
    made: list[Cli] = []

    def make() -> Node:
        cli = Cli(tmp_path / f"data{len(made)}", config)
        made.append(cli)
        return Node(cli)

    yield make
    for cli in made:
        if cli.state_file.exists():
            cli("sidecar", "stop")
            kill_leftover(cli.state_file)


def retried(upstream: Upstream, request_id: str) -> dict[str, str]:
    """Headers for a call the upstream fails once (503) and then answers."""
    upstream.then(reply(503, b"busy"), reply(200, b'{"ok": true}'))
    return {
        "X-Target-URL": upstream.url + "/v1/charges",
        "X-Retry-Count": "2",
        "X-Retry-Delay": "10ms",
        "X-Request-ID": request_id,
    }


def host_of(upstream: Upstream) -> str:
    return upstream.url.partition("://")[2]


async def test_a_retried_request_is_a_rescue_event_with_its_request_id(
    node: NewNode, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    sidecar = node().start()

    answer = await http.post(
        sidecar.url + "/?customer=jane", headers=retried(upstream, "evt-retry-1")
    )
    assert answer.status_code == 200
    assert answer.headers["x-rescued"] == "retry"
    assert answer.headers["x-request-id"] == "evt-retry-1"

    event = await sidecar.until_event("evt-retry-1")
    assert event["kind"] == "rescue"
    assert event["reason"] == "retry"
    assert event["status"] == 200
    assert event["attempts"] == 2
    assert event["host"] == host_of(upstream)
    assert event["route"] is None
    assert event["time"].endswith("Z") and "T" in event["time"]
    assert isinstance(event["latency_ms"], float)
    assert "/v1/charges" not in json.dumps(event) and "jane" not in json.dumps(event)


async def test_failures_and_blocks_are_events_without_bodies(
    node: NewNode, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    sidecar = node().start()
    upstream.then(reply(503, b"down"))
    failed = await http.get(
        sidecar.url, headers={"X-Target-URL": upstream.url, "X-Request-ID": "evt-down"}
    )
    assert failed.status_code == 503
    blocked = await http.post(
        sidecar.url,
        headers={"X-Target-URL": upstream.url, "X-Request-ID": "evt-card"},
        content=f'{{"card": "{CARD}"}}'.encode(),
    )
    assert blocked.json()["error"]["code"] == "pci_card_number"

    down = await sidecar.until_event("evt-down", "--kind", "upstream_error")
    assert (down["reason"], down["status"], down["attempts"]) == ("server_error", 503, 1)
    card = await sidecar.until_event("evt-card")
    assert (card["kind"], card["reason"], card["status"]) == ("pci_block", "pci_card_number", 400)
    everything = await sidecar.mirapi("events", "tail", "--json", "-n", "100")
    assert CARD not in everything.stdout and CARD.replace(" ", "") not in everything.stdout


async def test_follow_prints_an_event_that_happens_after_it_started(
    node: NewNode, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    sidecar = node().start()
    # An event before the follower starts: seeing it shows the follower runs.
    upstream.then(reply(502, b"bad gateway"))
    await http.get(sidecar.url, headers={"X-Target-URL": upstream.url, "X-Request-ID": "evt-a"})
    follower = await asyncio.create_subprocess_exec(
        *sidecar.cli.command,
        "events",
        "tail",
        "-f",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=sidecar.cli.env,
    )
    try:

        async def until_line(request_id: str) -> dict[str, Any]:
            assert follower.stdout is not None
            async with asyncio.timeout(WITHIN):
                while True:
                    raw = await follower.stdout.readline()
                    assert raw, "the follower ended"
                    line: dict[str, Any] = json.loads(raw)
                    if line["request_id"] == request_id:
                        return line

        assert (await until_line("evt-a"))["kind"] == "upstream_error"
        answer = await http.get(sidecar.url, headers=retried(upstream, "evt-b"))
        assert answer.headers["x-rescued"] == "retry"
        began = time.monotonic()
        event = await until_line("evt-b")
        assert time.monotonic() - began < 5.0
        assert (event["kind"], event["reason"], event["attempts"]) == ("rescue", "retry", 2)
    finally:
        if follower.returncode is None:
            follower.terminate()
        await asyncio.wait_for(follower.wait(), WITHIN)


async def test_sidecars_sharing_redis_share_one_event_log(
    node: NewNode, private_redis: RedisServer, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    first, second = await asyncio.gather(
        asyncio.to_thread(node().start, "--redis", private_redis.url),
        asyncio.to_thread(node().start, "--redis", private_redis.url),
    )

    await http.get(first.url, headers=retried(upstream, "evt-first"))
    await http.get(second.url, headers=retried(upstream, "evt-second"))

    # Read through the first's data dir: both sidecars' events are there.
    shared = await first.until_event("evt-second", "--redis", private_redis.url)
    assert (shared["kind"], shared["reason"]) == ("rescue", "retry")
    await first.until_event("evt-first", "--redis", private_redis.url)
