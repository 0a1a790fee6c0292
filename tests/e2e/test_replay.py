"""Request records and `mirapi replay` end to end (issue 7): a real sidecar
process records what it proxies into its data dir's store; the real CLI
reads a record back and sends it again through that sidecar.

The upstream runs in this process, so CLI commands that reach it run in a
thread. Records are written in the background (a quarter second or so), so
a test waits, bounded, until the record it needs can be read.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import httpx
import orjson

from tests.support.cli import Cli
from tests.support.upstream import Upstream

SECRET = "sk_test_Zq7mXkR2recordme"
CARD = "4111111111111111"


async def replay(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, "replay", *args)


async def recorded(cli: Cli, request_id: str, within: float = 10.0) -> dict[str, object]:
    """The record of `request_id` once the sidecar has written it; fails after `within` s."""
    began = time.monotonic()
    while True:
        shown = await replay(cli, request_id, "--show", "--json")
        if shown.returncode == 0:
            record: dict[str, object] = orjson.loads(shown.stdout)
            return record
        assert "no request record" in shown.stderr, shown.stderr
        assert time.monotonic() - began < within, f"{request_id} was not recorded in {within}s"
        await asyncio.sleep(0.2)


def files_holding(data_dir: Path, needle: bytes) -> list[str]:
    """Every file under `data_dir` whose bytes contain `needle` (SQLite, WAL, logs...)."""
    return [
        str(path) for path in data_dir.rglob("*") if path.is_file() and needle in path.read_bytes()
    ]


async def test_a_recorded_post_is_replayed_with_a_new_header_and_its_body(
    cli: Cli, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    sidecar = str(cli.start("--allow-private")["address"])
    body = b'{"amount": 2000, "currency": "eur", "note": "caf\xc3\xa9"}'
    answer = await http.post(
        sidecar + "/v1/charges?expand=customer",
        content=body,
        headers={
            "X-Target-URL": upstream.url,
            "X-Proxy-Record": "on",
            "X-Request-ID": "rec-1",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {SECRET}",
        },
    )
    assert answer.status_code == 200
    # Recording off (the default) for this one: its body is never stored.
    unrecorded = await http.post(
        sidecar + "/v1/other",
        content=b"UNRECORDED-BODY-MARK",
        headers={"X-Target-URL": upstream.url, "X-Request-ID": "rec-2"},
    )
    assert unrecorded.status_code == 200

    record = await recorded(cli, "rec-1")
    assert record["url"] == f"{upstream.url}/v1/charges?expand=customer"
    assert "header:authorization" in record["withheld"]  # type: ignore[operator]
    bare = await recorded(cli, "rec-2")
    assert bare["body"] is None and bare["withheld"] == ["body"]

    done = await replay(cli, "rec-1", "-H", "X-Extra: 1", "-i")

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("HTTP/1.1 200")
    assert "authorization was not recorded" in done.stderr
    original, again = upstream.seen[0], upstream.seen[2]
    assert again.method == "POST"
    assert again.path_qs == "/v1/charges?expand=customer"
    assert again.body == body == original.body
    assert again.headers["x-extra"] == "1"
    assert again.headers["content-type"] == "application/json"
    assert "authorization" not in again.headers
    # A POST whose body was not recorded is refused, not sent empty.
    refused = await replay(cli, "rec-2")
    assert refused.returncode == 2
    assert "whose body was not recorded" in refused.stderr and "--data" in refused.stderr
    assert len(upstream.seen) == 3
    shown = await replay(cli, "rec-2", "--show")
    assert shown.returncode == 0 and "a replay needs --data" in shown.stdout
    given = await replay(cli, "rec-2", "--data", "amount=1")
    assert given.returncode == 0, given.stderr
    assert (upstream.seen[3].path_qs, upstream.seen[3].body) == ("/v1/other", b"amount=1")
    # Neither the credential nor an unrecorded body is anywhere on disk.
    assert files_holding(cli.data_dir, SECRET.encode()) == []
    assert files_holding(cli.data_dir, b"UNRECORDED-BODY-MARK") == []


async def test_a_pci_blocked_request_is_never_recorded(
    cli: Cli, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    sidecar = str(cli.start("--allow-private")["address"])
    headers = {"X-Target-URL": upstream.url, "X-Proxy-Record": "on"}
    blocked = await http.post(
        sidecar + "/v1/charges",
        content=f"number={CARD}&exp=12/30".encode(),
        headers={**headers, "X-Request-ID": "pci-1"},
    )
    assert blocked.status_code == 400
    assert blocked.json()["error"]["code"] == "pci_card_number"
    # Written after the blocked one: once it is readable, the blocked one
    # would have been too.
    later = await http.post(
        sidecar + "/v1/charges", content=b"amount=1", headers={**headers, "X-Request-ID": "ok-1"}
    )
    assert later.status_code == 200
    await recorded(cli, "ok-1")

    missing = await replay(cli, "pci-1")
    assert missing.returncode == 1
    assert "no request record 'pci-1'" in missing.stderr
    assert files_holding(cli.data_dir, CARD.encode()) == []
    assert len(upstream.seen) == 1
