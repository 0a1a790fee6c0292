"""Durable async jobs with signed callbacks, end to end (issue 5).

Real sidecar processes started by the real CLI (`--allow-private`: the
upstream and the callback receiver are on 127.0.0.1), a scripted upstream
and a callback receiver in this process, and a private redis-server for the
shared-state tests. Callback signatures are checked with the test's own
Standard Webhooks verifier (tests/support/webhooks.py), never with the
sidecar's signing code. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import Cli, kill_leftover
from tests.support.redis import RedisServer
from tests.support.upstream import Upstream, reply
from tests.support.webhooks import InvalidSignature, Receiver, receiving, verify

#: Jobs in each crash test, and how long the slow upstream takes per answer.
CRASH_JOBS = 20
SLOW = 1.5

NewCli = Callable[..., Cli]


@pytest.fixture
def new_cli(tmp_path: Path) -> Iterator[NewCli]:
    """CLIs, each on its own data dir (optionally its own config); sidecars killed at the end."""
    made: list[Cli] = []

    def make(config_text: str = "") -> Cli:
        config = tmp_path / f"config{len(made)}.toml"
        config.write_text(config_text)
        cli = Cli(tmp_path / f"data{len(made)}", config)
        made.append(cli)
        return cli

    yield make
    for cli in made:
        if cli.state_file.exists():
            cli("sidecar", "stop")
            kill_leftover(cli.state_file)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as server:
        yield server


def start(cli: Cli, *args: str) -> str:
    return str(cli.start("--allow-private", *args)["address"])


def secret_of(cli: Cli, *args: str) -> str:
    done = cli("webhooks", "secret", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def job_headers(
    upstream: Upstream, receiver: Receiver, path: str = "/v1/charges"
) -> dict[str, str]:
    return {"X-Target-URL": upstream.url + path, "X-Webhook-Callback": receiver.url}


async def submit(
    http: httpx.AsyncClient, sidecar: str, headers: dict[str, str], body: bytes = b"amount=100"
) -> str:
    """POST a job; assert the 202 and return its id."""
    answer = await http.post(sidecar, headers=headers, content=body)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    job_id = accepted["job_id"]
    assert isinstance(job_id, str) and job_id
    assert accepted["status_url"].endswith(f"/_mirapi/jobs/{job_id}")
    assert answer.headers["location"].endswith(f"/_mirapi/jobs/{job_id}")
    return str(job_id)


async def status_until(
    http: httpx.AsyncClient,
    sidecar: str,
    job_id: str,
    done: Callable[[dict[str, Any]], bool],
    within: float,
) -> dict[str, Any]:
    """GET /_mirapi/jobs/ID until `done(view)`; fail after `within` s."""
    deadline = time.monotonic() + within
    while True:
        answer = await http.get(f"{sidecar}/_mirapi/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        view: dict[str, Any] = answer.json()
        if done(view):
            return view
        assert time.monotonic() < deadline, f"job {job_id} is still {view} after {within}s"
        await asyncio.sleep(0.1)


def cli_show(cli: Cli, job_id: str, *args: str) -> dict[str, Any]:
    done = cli("jobs", "show", job_id, "--json", *args)
    assert done.returncode == 0, done.stderr
    view: dict[str, Any] = json.loads(done.stdout)
    return view


def test_the_verifier_reproduces_the_published_standard_webhooks_example() -> None:
    # The example from the Standard Webhooks reference libraries: the
    # verifier below is only worth something if it accepts exactly this.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    forever = 1e12
    verify(secret, headers, body, tolerance=forever)
    with pytest.raises(InvalidSignature):
        verify(secret, headers, body + b" ", tolerance=forever)
    with pytest.raises(InvalidSignature):
        verify("whsec_" + "A" * 32, headers, body, tolerance=forever)
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify(secret, headers, body)  # 2021: far too old


async def test_a_job_runs_and_its_signed_callback_carries_the_answer(
    new_cli: NewCli, upstream: Upstream, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    cli = new_cli()
    sidecar = start(cli)
    upstream.default = reply(
        201, b'{"charge": "ch_1"}', {"Content-Type": "application/json", "X-Upstream": "yes"}
    )
    receiver.answer(500)  # the first delivery fails: the callback is retried

    job_id = await submit(http, sidecar, job_headers(upstream, receiver))

    deliveries = await receiver.wait_for_deliveries(2, within=15)
    failed, delivered = deliveries[0], deliveries[1]
    assert (failed.answered, delivered.answered) == (500, 200)
    payload = delivered.json()
    assert payload["job_id"] == job_id
    assert payload["status"] == "succeeded"
    assert payload["attempts"] == 1
    response = payload["response"]
    assert response["status"] == 201
    assert response["body"] == '{"charge": "ch_1"}'
    assert "body_encoding" not in response
    assert response["headers"]["x-upstream"] == "yes"
    assert failed.body == delivered.body

    # Signed with the install's secret, as `mirapi webhooks secret` shows it.
    secret = secret_of(cli)
    for delivery in deliveries:
        verify(secret, delivery.headers, delivery.body)
        # Stable across deliveries of one outcome: "<job id>.<runs>".
        assert delivery.headers["webhook-id"] == f"{job_id}.1"
    with pytest.raises(InvalidSignature):
        verify(secret, delivered.headers, delivered.body.replace(b"201", b"200"))

    # The upstream got the request as sent, with an Idempotency-Key.
    [seen] = upstream.seen
    assert (seen.method, seen.path_qs, seen.body) == ("POST", "/v1/charges", b"amount=100")
    assert seen.headers.get("idempotency-key")
    assert "x-webhook-callback" not in seen.headers

    view = await status_until(http, sidecar, job_id, lambda v: v["callback"]["delivered"], within=5)
    assert (view["status"], view["attempts"], view["response_status"]) == ("succeeded", 1, 201)
    assert view["callback"]["attempts"] == 2
    assert view["next_attempt_at"] is None
    assert "ch_1" not in json.dumps(view)  # never the body
    assert cli_show(cli, job_id) == view


async def test_a_binary_answer_is_called_back_in_base64(
    new_cli: NewCli, upstream: Upstream, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    sidecar = start(new_cli())
    upstream.default = reply(200, b"\x89PNG\xff\x00", {"Content-Type": "image/png"})

    job_id = await submit(http, sidecar, job_headers(upstream, receiver, "/logo.png"))

    await receiver.wait_for_jobs(1, within=10)
    payload = receiver.for_job(job_id)[0].json()
    assert payload["response"]["body_encoding"] == "base64"
    assert payload["response"]["body"] == "iVBOR/8A"


async def test_a_flaky_upstream_is_run_again_until_it_succeeds(
    new_cli: NewCli, upstream: Upstream, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    cli = new_cli()
    sidecar = start(cli)
    upstream.then(reply(503, b"busy"), reply(200, b'{"ok": 2}'))
    # No retry inside a run: the second call is the job's own second run.
    headers = {**job_headers(upstream, receiver), "X-Retry-Count": "0"}

    job_id = await submit(http, sidecar, headers)

    waiting = await status_until(http, sidecar, job_id, lambda v: v["attempts"] == 1, within=10)
    assert waiting["status"] == "queued"
    assert waiting["last_error"] == "upstream answered 503"
    assert waiting["next_attempt_at"] > time.time() + 2  # a stored, later due time
    assert cli_show(cli, job_id) == waiting  # the CLI and the endpoint agree

    # The job-level retry waits ~10 s (the first step of its backoff).
    await receiver.wait_for_jobs(1, within=20)
    [delivery] = receiver.deliveries
    payload = delivery.json()
    assert (payload["status"], payload["attempts"]) == ("succeeded", 2)
    assert payload["response"]["status"] == 200
    assert payload["response"]["body"] == '{"ok": 2}'
    verify(secret_of(cli), delivery.headers, delivery.body)
    keys = [seen.headers.get("idempotency-key") for seen in upstream.seen]
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]  # one key for every run


async def test_no_job_is_accepted_while_the_store_is_down(
    new_cli: NewCli,
    private_redis: RedisServer,
    upstream: Upstream,
    receiver: Receiver,
    http: httpx.AsyncClient,
) -> None:
    sidecar = start(new_cli(), "--redis", private_redis.url)
    headers = job_headers(upstream, receiver)
    await submit(http, sidecar, headers)  # accepted while Redis is up

    private_redis.stop()
    for _ in range(3):
        refused = await http.post(sidecar, headers=headers, content=b"a=1")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "store_unavailable"
        assert int(refused.headers["retry-after"]) >= 1
        assert "location" not in refused.headers


async def test_embedded_no_accepted_job_is_lost_when_the_sidecar_is_killed(
    new_cli: NewCli, upstream: Upstream, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    cli = new_cli()
    sidecar = start(cli)
    upstream.default = reply(200, b'{"slow": true}', delay=SLOW)
    accepted = await submit_many(http, sidecar, job_headers(upstream, receiver))

    await until(lambda: len(upstream.seen) >= 5, within=10)  # some done, some running
    sigkill(cli)
    assert len(receiver.job_ids()) < CRASH_JOBS

    start(cli)  # the same data dir: dead leases are due again at once
    called_back = await receiver.wait_for_jobs(CRASH_JOBS, within=60)

    assert called_back == set(accepted)
    assert_at_least_once_with_one_key(upstream, accepted)


async def test_redis_a_second_sidecar_takes_over_the_jobs_of_a_killed_one(
    new_cli: NewCli,
    private_redis: RedisServer,
    upstream: Upstream,
    receiver: Receiver,
    http: httpx.AsyncClient,
) -> None:
    short_lease = 'job_lease = "2s"\n'
    first_cli, second_cli = new_cli(short_lease), new_cli(short_lease)
    first = start(first_cli, "--redis", private_redis.url)
    start(second_cli, "--redis", private_redis.url)
    upstream.default = reply(200, b'{"slow": true}', delay=SLOW)
    accepted = await submit_many(http, first, job_headers(upstream, receiver))

    await until(lambda: len(upstream.seen) >= 5, within=10)
    sigkill(first_cli)

    called_back = await receiver.wait_for_jobs(CRASH_JOBS, within=60)
    assert called_back == set(accepted)
    assert_at_least_once_with_one_key(upstream, accepted)
    # Every callback is signed with the one secret the two sidecars share.
    secret = secret_of(second_cli, "--redis", private_redis.url)
    for delivery in receiver.deliveries:
        verify(secret, delivery.headers, delivery.body)


# -- helpers for the crash tests ------------------------------------------------------


async def submit_many(http: httpx.AsyncClient, sidecar: str, headers: dict[str, str]) -> list[str]:
    """CRASH_JOBS jobs, each with its own body; every one must be a 202."""
    ids = await asyncio.gather(
        *(submit(http, sidecar, headers, f"n={n}".encode()) for n in range(CRASH_JOBS))
    )
    assert len(set(ids)) == CRASH_JOBS
    return list(ids)


async def until(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not so within {within}s"
        await asyncio.sleep(0.02)


def sigkill(cli: Cli) -> None:
    """SIGKILL the data dir's sidecar and wait (bounded) until it is gone."""
    pid = int(cli.state()["pid"])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} survived SIGKILL"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    """Running, and not a zombie (a container's init may be slow to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def assert_at_least_once_with_one_key(upstream: Upstream, accepted: list[str]) -> None:
    """Every job reached the upstream, some twice (killed mid-call), each with one key.

    Without a client key a job's Idempotency-Key is its own: a run again
    after the crash carries the key of the first.
    """
    bodies: dict[bytes, set[str | None]] = {}
    for seen in upstream.seen:
        bodies.setdefault(seen.body, set()).add(seen.headers.get("idempotency-key"))
    assert len(bodies) == CRASH_JOBS  # every job reached the upstream
    for keys in bodies.values():
        assert len(keys) == 1 and None not in keys  # one key per job, on every run
    assert len(set().union(*bodies.values())) == CRASH_JOBS  # and a key of its own
    runs = Counter(seen.body for seen in upstream.seen)
    assert max(runs.values()) >= 2, "no call was cut short by the kill"
