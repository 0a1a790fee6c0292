"""The async stage: a request with X-Webhook-Callback becomes a stored job, answered 202.

Stage-level tests run the real chain in front of a memory store; the HTTP
ones run a real sidecar (Hypercorn) and check the status endpoint and readyz.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from sidecar.errors import BadHeader, EgressDenied, StoreUnavailable
from sidecar.exchange import Exchange, Next, Response
from sidecar.jobs.model import QUEUED, Job
from sidecar.outbound.upstream import UpstreamClient
from sidecar.pipeline import Parts, build_chain
from sidecar.policy import parse_policy
from sidecar.routing.routes import Endpoint, Route
from sidecar.security.egress import EgressPolicy
from sidecar.stages.async_jobs import AsyncJobs, NoAsyncJobs
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock
from tests.support.upstream import Upstream

CALLBACK = "http://127.0.0.1:9/hook"
TARGET = "http://127.0.0.1:9/v1"


def make_exchange(
    headers: dict[str, str], method: str = "POST", path: str = "/charges"
) -> Exchange:
    lowered = [(name.lower(), value) for name, value in headers.items()]
    policy = parse_policy(dict(lowered))
    return Exchange(method, path, "a=1", lowered, b'{"amount":1}', policy, "rid-1")


class Jobs:
    """A submit chain with the async stage in front of a memory store."""

    def __init__(self, egress: Any = None, store: Any = None, routes: Any = None) -> None:
        self.clock = FakeClock()
        self.store = store or MemoryStore(self.clock.clock())
        self.woken = 0
        self.stage = AsyncJobs(
            self.store,
            self.clock.clock(),
            egress or EgressPolicy(allow_private=True),
            wake=self._wake,
        )
        self.client = UpstreamClient(EgressPolicy(allow_private=True))
        parts = Parts(
            store=self.store, max_body=1024, cache_entry_limit=1024, jobs=self.stage, routes=routes
        )
        self.chain: Next = build_chain(self.client, parts)

    def _wake(self) -> None:
        self.woken += 1

    async def job(self, response: Response) -> Job:
        job_id = orjson.loads(response.body)["job_id"]
        job = await self.store.job_get(job_id)
        assert job is not None
        return job


async def test_accepts_stores_and_answers_202() -> None:
    jobs = Jobs()
    headers = {"X-Target-URL": TARGET, "X-Webhook-Callback": CALLBACK, "Authorization": "Bearer t"}
    response = await jobs.chain(make_exchange(headers))
    assert response.status == 202
    body = orjson.loads(response.body)
    assert body["job_id"].startswith("job_") and len(body["job_id"]) == 4 + 24
    assert body["status_url"] == f"/_mirapi/jobs/{body['job_id']}"
    assert ("location", body["status_url"]) in response.headers
    job = await jobs.job(response)
    assert job.status == QUEUED and job.attempts == 0
    assert job.callback_url == CALLBACK
    assert job.request.method == "POST"
    assert job.request.path == "/charges" and job.request.query == "a=1"
    assert job.request.body == b'{"amount":1}'
    assert ("authorization", "Bearer t") in job.request.headers
    assert job.due_at == jobs.clock.t  # due at once
    assert job.retry_until == jobs.clock.t + 24 * 3600
    assert job.idempotency_key == job.id
    assert jobs.woken == 1


async def test_explicit_key_and_retry_for_are_kept() -> None:
    jobs = Jobs()
    headers = {
        "X-Target-URL": TARGET,
        "X-Webhook-Callback": CALLBACK,
        "X-Proxy-Idempotency-Key": "order-7",
        "X-Webhook-Retry-For": "6h",
        "X-MirApi-Key": "client-secret",
    }
    job = await jobs.job(await jobs.chain(make_exchange(headers)))
    assert job.idempotency_key == "order-7"
    assert job.retry_until == jobs.clock.t + 6 * 3600
    # The sidecar's API key is of no use to the run: not kept with the job.
    assert all(name != "x-mirapi-key" for name, _ in job.request.headers)


async def test_resubmitting_with_the_same_key_replays_the_first_202() -> None:
    jobs = Jobs()
    headers = {
        "X-Target-URL": TARGET,
        "X-Webhook-Callback": CALLBACK,
        "X-Proxy-Idempotency-Key": "order-8",
    }
    first = await jobs.chain(make_exchange(headers))
    second = await jobs.chain(make_exchange(headers))
    assert orjson.loads(first.body) == orjson.loads(second.body)
    assert len(await jobs.store.job_list()) == 1


async def test_without_callback_passes_through() -> None:
    jobs = Jobs()
    called: list[Exchange] = []

    async def terminal(exchange: Exchange) -> Response:
        called.append(exchange)
        return Response(200, [])

    response = await jobs.stage(make_exchange({"X-Target-URL": TARGET}), terminal)
    assert response.status == 200 and len(called) == 1
    assert await jobs.store.job_list() == []


async def test_path_mode_keeps_the_route_path() -> None:
    route = Route(name="pay", endpoints=(Endpoint(url=TARGET),))
    jobs = Jobs(routes={"pay": route})
    exchange = make_exchange({"X-Webhook-Callback": CALLBACK}, path="/r/pay/charges")
    job = await jobs.job(await jobs.chain(exchange))
    # The run goes through Routing again, which must see path mode.
    assert job.request.path == "/r/pay/charges"


class DownStore(MemoryStore):
    async def job_add(self, job: Job) -> None:
        raise StoreUnavailable("the store did not answer")


async def test_store_down_is_503_with_retry_after_and_nothing_accepted() -> None:
    store = DownStore(FakeClock().clock())
    jobs = Jobs(store=store)
    headers = {"X-Target-URL": TARGET, "X-Webhook-Callback": CALLBACK}
    with pytest.raises(StoreUnavailable) as caught:
        await jobs.chain(make_exchange(headers))
    assert caught.value.status == 503 and caught.value.retry_after is not None
    assert jobs.woken == 0
    assert await store.job_list() == []


async def test_callback_denied_by_egress_is_403_at_submit() -> None:
    jobs = Jobs(egress=EgressPolicy())  # loopback not allowed
    headers = {"X-Target-URL": TARGET, "X-Webhook-Callback": CALLBACK}
    with pytest.raises(EgressDenied) as caught:
        await jobs.chain(make_exchange(headers))
    assert caught.value.status == 403
    assert await jobs.store.job_list() == []


async def test_bad_callback_header_is_400() -> None:
    with pytest.raises(BadHeader) as caught:
        parse_policy({"x-webhook-callback": "ftp://x/y"})
    assert caught.value.header == "X-Webhook-Callback"
    with pytest.raises(BadHeader):
        parse_policy({"x-webhook-retry-for": "0s"})


async def test_without_workers_a_callback_is_refused() -> None:
    async def terminal(exchange: Exchange) -> Response:
        raise AssertionError("must not be called")

    headers = {"X-Target-URL": TARGET, "X-Webhook-Callback": CALLBACK}
    with pytest.raises(BadHeader) as caught:
        await NoAsyncJobs()(make_exchange(headers), terminal)
    assert "running sidecar" in caught.value.message


# -- over HTTP, through a real sidecar -----------------------------------------


async def test_http_202_status_endpoint_and_readyz(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    response = await client.post(
        "/v1/charges",
        headers={"X-Target-URL": upstream.url, "X-Webhook-Callback": f"{upstream.url}/hook"},
        content=b"amount=1",
    )
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == body["status_url"]
    status = await client.get(body["status_url"])
    assert status.status_code == 200
    view = status.json()
    assert view["id"] == body["job_id"]
    assert view["status"] in ("queued", "succeeded")
    assert "body" not in orjson.dumps(view).decode()
    ready = await client.get("/_mirapi/readyz")
    assert isinstance(ready.json()["jobs"]["depth"], int)


async def test_http_unknown_job_is_404_job_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/_mirapi/jobs/job_000000000000000000000000")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"
