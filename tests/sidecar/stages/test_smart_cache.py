"""The smart cache stage directly, on the memory store, with a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sidecar.errors import (
    BadRequest,
    CircuitOpen,
    EgressDenied,
    GatewayTimeout,
    MirApiError,
    StoreUnavailable,
    UpstreamUnreachable,
)
from sidecar.exchange import Exchange, Headers, Response
from sidecar.policy import parse_policy
from sidecar.stages.smart_cache import SmartCache
from sidecar.store.base import Store, StoredResponse
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock

URL = "https://api.test/v1/things?page=2"
LIMIT = 1024


def exchange(
    cache: str | None = "5m",
    *,
    auth: str | None = "Bearer one",
    client: str = "client-a",
    url: str = URL,
    body: bytes = b"{}",
    extra: Headers | None = None,
) -> Exchange:
    policy = parse_policy({"x-smart-cache": cache} if cache is not None else {})
    headers: Headers = [("authorization", auth)] if auth is not None else []
    headers += extra or []
    return Exchange(
        "POST", "/", "", headers, body, policy, "rid", client_id=client, targets=(url,), target=url
    )


class Upstream:
    """Answers with each scripted outcome in turn; records calls and closes."""

    def __init__(self, *outcomes: Response | MirApiError) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self, _: Exchange) -> Response:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, MirApiError):
            raise outcome
        return outcome


class Closable:
    """A response whose `close` is observed."""

    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1

    def whole(self, status: int, body: bytes = b"", headers: Headers | None = None) -> Response:
        return Response(status, list(headers or []), body=body, close=self.close)

    def streamed(self, chunks: list[bytes], *, breaks: bool = False) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk
            if breaks:
                raise ConnectionResetError("cut")

        return Response(200, [("content-type", "text/plain")], stream=stream(), close=self.close)


def ok(body: bytes = b'{"ok":true}', headers: Headers | None = None) -> Response:
    return Response(200, [("content-type", "application/json"), *(headers or [])], body=body)


async def deliver(response: Response) -> bytes:
    """What the client receives, read the way sidecar.app sends a response."""
    if response.stream is None:
        return response.body
    chunks = []
    try:
        async for chunk in response.stream:
            chunks.append(chunk)
    finally:
        await response.discard()
    return b"".join(chunks)


def header(response: Response, name: str) -> str | None:
    values = [value for key, value in response.headers if key == name]
    return values[-1] if values else None


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(fake: FakeClock) -> Store:
    return MemoryStore(fake.clock(), 1 << 20)


@pytest.fixture
def cache(store: Store, fake: FakeClock) -> SmartCache:
    return SmartCache(store, fake.clock(), LIMIT)


async def test_rescues_a_5xx_with_the_kept_answer(cache: SmartCache, fake: FakeClock) -> None:
    first = exchange()
    kept = ok(headers=[("set-cookie", "session=abc"), ("x-request-id", "old"), ("etag", '"v1"')])
    assert (await cache(first, Upstream(kept))).status == 200
    assert first.rescue is None
    fake.advance(30)
    failed = Closable()
    ex = exchange()
    response = await cache(ex, Upstream(failed.whole(503, b"down")))
    assert response.status == 200
    assert await deliver(response) == b'{"ok":true}'
    assert ex.rescue == "cache"
    assert header(response, "age") == "30"
    assert header(response, "cache-status") == (
        "mirapi; fwd=request; fwd-status=503; ttl=270; detail=rescue"
    )
    assert header(response, "etag") == '"v1"'
    assert header(response, "set-cookie") is None
    assert header(response, "x-request-id") is None
    assert failed.closed == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_every_upstream_failure_status_is_rescued(cache: SmartCache, status: int) -> None:
    await cache(exchange(), Upstream(ok()))
    ex = exchange()
    response = await cache(ex, Upstream(Response(status, [])))
    assert response.status == 200
    assert f"fwd-status={status}" in (header(response, "cache-status") or "")


@pytest.mark.parametrize(
    "error",
    [
        UpstreamUnreachable("unreachable"),
        GatewayTimeout("slow"),
        GatewayTimeout("deadline", code="deadline_exceeded"),
        CircuitOpen("open", retry_after=30),
    ],
)
async def test_errors_after_every_retry_are_rescued(cache: SmartCache, error: MirApiError) -> None:
    await cache(exchange(), Upstream(ok()))
    ex = exchange()
    response = await cache(ex, Upstream(error))
    assert response.status == 200
    assert ex.rescue == "cache"
    assert header(response, "cache-status") == "mirapi; fwd=request; ttl=300; detail=rescue"


async def test_without_an_entry_the_failure_goes_out_unchanged(cache: SmartCache) -> None:
    failed = Response(503, [("retry-after", "3")], body=b"down")
    assert await cache(exchange(), Upstream(failed)) is failed
    with pytest.raises(UpstreamUnreachable):
        await cache(exchange(), Upstream(UpstreamUnreachable("unreachable")))


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
async def test_client_errors_are_not_rescued(cache: SmartCache, status: int) -> None:
    await cache(exchange(), Upstream(ok()))
    ex = exchange()
    response = await cache(ex, Upstream(Response(status, [])))
    assert response.status == status
    assert ex.rescue is None


@pytest.mark.parametrize("error", [BadRequest("bad"), EgressDenied("no")])
async def test_sidecar_refusals_are_not_rescued(cache: SmartCache, error: MirApiError) -> None:
    await cache(exchange(), Upstream(ok()))
    with pytest.raises(type(error)):
        await cache(exchange(), Upstream(error))


@pytest.mark.parametrize("status", [201, 204])
async def test_any_2xx_is_kept(cache: SmartCache, status: int) -> None:
    await cache(exchange(), Upstream(Response(status, [], body=b"made")))
    response = await cache(exchange(), Upstream(Response(503, [])))
    assert (response.status, response.body) == (status, b"made")


@pytest.mark.parametrize("status", [206, 301, 404, 429, 500])
async def test_only_whole_2xx_answers_are_kept(cache: SmartCache, status: int) -> None:
    await cache(exchange(), Upstream(Response(status, [], body=b"not this")))
    response = await cache(exchange(), Upstream(Response(503, [], body=b"down")))
    assert (response.status, response.body) == (503, b"down")


async def test_serve_fresh_answers_without_calling_the_upstream(
    cache: SmartCache, fake: FakeClock
) -> None:
    await cache(exchange("5m; serve-fresh"), Upstream(ok()))
    fake.advance(60)
    upstream = Upstream(ok(b"newer"))
    ex = exchange("5m; serve-fresh")
    response = await cache(ex, upstream)
    assert upstream.calls == 0
    assert response.body == b'{"ok":true}'
    assert header(response, "cache-status") == "mirapi; hit; ttl=240"
    assert header(response, "age") == "60"
    # A hit is not a rescue: no X-Rescued.
    assert ex.rescue is None


async def test_serve_fresh_calls_through_when_nothing_is_kept(cache: SmartCache) -> None:
    upstream = Upstream(ok(b"first"), ok(b"second"))
    assert (await cache(exchange("5m; serve-fresh"), upstream)).body == b"first"
    assert (await cache(exchange("5m; serve-fresh"), upstream)).body == b"first"
    assert upstream.calls == 1


async def test_without_serve_fresh_the_upstream_is_always_called(cache: SmartCache) -> None:
    upstream = Upstream(ok(b"first"), ok(b"second"))
    await cache(exchange(), upstream)
    response = await cache(exchange(), upstream)
    assert (upstream.calls, response.body) == (2, b"second")
    assert header(response, "cache-status") is None


async def test_a_newer_answer_replaces_the_kept_one(cache: SmartCache) -> None:
    await cache(exchange(), Upstream(ok(b"first")))
    await cache(exchange(), Upstream(ok(b"second")))
    assert (await cache(exchange(), Upstream(Response(500, [])))).body == b"second"


async def test_a_streamed_body_streams_intact_and_is_kept_once_it_ends(
    cache: SmartCache,
) -> None:
    upstream = Closable()
    chunks = [b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"]
    response = await cache(exchange(), Upstream(upstream.streamed(chunks)))
    assert response.stream is not None
    # Nothing is kept before the client has read the whole body.
    with pytest.raises(UpstreamUnreachable):
        await cache(exchange(), Upstream(UpstreamUnreachable("down")))
    assert await deliver(response) == b"".join(chunks)
    assert upstream.closed == 1
    rescued = await cache(exchange(), Upstream(UpstreamUnreachable("down")))
    assert await deliver(rescued) == b"".join(chunks)
    assert header(rescued, "content-type") == "text/plain"


async def test_a_body_over_the_limit_passes_through_and_is_not_kept(cache: SmartCache) -> None:
    upstream = Closable()
    chunks = [b"x" * 600, b"y" * 600, b"z"]
    response = await cache(exchange(), Upstream(upstream.streamed(chunks)))
    assert await deliver(response) == b"".join(chunks)
    assert upstream.closed == 1
    await cache(exchange(), Upstream(ok(b"w" * (LIMIT + 1))))
    with pytest.raises(UpstreamUnreachable):
        await cache(exchange(), Upstream(UpstreamUnreachable("down")))


async def test_a_body_of_exactly_the_limit_is_kept(cache: SmartCache) -> None:
    response = await cache(exchange(), Upstream(Closable().streamed([b"a" * (LIMIT - 1), b"b"])))
    await deliver(response)
    rescued = await cache(exchange(), Upstream(Response(502, [])))
    assert rescued.body == b"a" * (LIMIT - 1) + b"b"


async def test_a_broken_stream_keeps_nothing(cache: SmartCache) -> None:
    upstream = Closable()
    response = await cache(exchange(), Upstream(upstream.streamed([b"part"], breaks=True)))
    with pytest.raises(ConnectionResetError):
        await deliver(response)
    assert upstream.closed == 1
    assert (await cache(exchange(), Upstream(Response(503, [])))).status == 503


async def test_an_abandoned_stream_keeps_nothing_and_frees_the_connection(
    cache: SmartCache,
) -> None:
    upstream = Closable()
    response = await cache(exchange(), Upstream(upstream.streamed([b"one", b"two"])))
    assert response.stream is not None
    assert await anext(response.stream) == b"one"
    await response.discard()
    assert upstream.closed == 1
    assert (await cache(exchange(), Upstream(Response(503, [])))).status == 503


@pytest.mark.parametrize(
    "other",
    [
        exchange(auth="Bearer two"),
        exchange(auth=None),
        exchange(client="client-b"),
        exchange(extra=[("x-api-key", "sk-other")]),
        exchange(url="https://api.test/v1/things?page=3"),
        exchange(body=b'{"other":1}'),
    ],
    ids=["authorization", "no-authorization", "client", "api-key", "query", "body"],
)
async def test_one_caller_never_sees_another_callers_answer(
    cache: SmartCache, other: Exchange
) -> None:
    await cache(exchange(), Upstream(ok(b"secret of caller one")))
    response = await cache(other, Upstream(Response(503, [], body=b"down")))
    assert (response.status, response.body) == (503, b"down")
    assert other.rescue is None
    # Not even a fresh hit.
    fresh = exchange("5m; serve-fresh", auth="Bearer two")
    assert (await cache(fresh, Upstream(ok(b"own")))).body == b"own"


async def test_header_order_does_not_change_the_key(cache: SmartCache) -> None:
    both = [("x-api-key", "k"), ("cookie", "c=1")]
    await cache(exchange(extra=both), Upstream(ok(b"kept")))
    reordered = exchange(extra=list(reversed(both)))
    assert (await cache(reordered, Upstream(Response(500, [])))).body == b"kept"


async def test_entries_expire_after_the_ttl(cache: SmartCache, fake: FakeClock) -> None:
    await cache(exchange("5m"), Upstream(ok()))
    fake.advance(299)
    assert (await cache(exchange("5m"), Upstream(Response(503, [])))).status == 200
    fake.advance(1)
    assert (await cache(exchange("5m"), Upstream(Response(503, [])))).status == 503


async def test_a_reader_with_a_shorter_ttl_refuses_older_entries(
    cache: SmartCache, fake: FakeClock
) -> None:
    await cache(exchange("1h"), Upstream(ok()))
    fake.advance(120)
    assert (await cache(exchange("1m"), Upstream(Response(503, [])))).status == 503
    rescued = await cache(exchange("5m"), Upstream(Response(503, [])))
    assert header(rescued, "cache-status") == (
        "mirapi; fwd=request; fwd-status=503; ttl=180; detail=rescue"
    )


async def test_age_adds_the_upstreams_own_age(cache: SmartCache, fake: FakeClock) -> None:
    await cache(exchange(), Upstream(ok(headers=[("age", "100")])))
    fake.advance(20)
    rescued = await cache(exchange(), Upstream(Response(503, [])))
    assert [value for name, value in rescued.headers if name == "age"] == ["120"]


async def test_off_without_the_header(fake: FakeClock) -> None:
    class Untouchable(MemoryStore):
        async def cache_get(self, key: str) -> StoredResponse | None:
            raise AssertionError("the cache is off")

        async def cache_put(self, key: str, entry: StoredResponse) -> None:
            raise AssertionError("the cache is off")

    cache = SmartCache(Untouchable(fake.clock(), 1 << 20), fake.clock(), LIMIT)
    answer = ok()
    assert await cache(exchange(None), Upstream(answer)) is answer
    failed = Response(503, [])
    assert await cache(exchange(None), Upstream(failed)) is failed


async def test_a_store_that_does_not_answer_never_fails_the_request(fake: FakeClock) -> None:
    class Down(MemoryStore):
        async def cache_get(self, key: str) -> StoredResponse | None:
            raise StoreUnavailable("down")

        async def cache_put(self, key: str, entry: StoredResponse) -> None:
            raise StoreUnavailable("down")

    cache = SmartCache(Down(fake.clock(), 1 << 20), fake.clock(), LIMIT)
    assert (await cache(exchange("5m; serve-fresh"), Upstream(ok(b"live")))).body == b"live"
    streamed = await cache(exchange(), Upstream(Closable().streamed([b"a", b"b"])))
    assert await deliver(streamed) == b"ab"
    assert (await cache(exchange(), Upstream(Response(503, [])))).status == 503
    with pytest.raises(CircuitOpen):
        await cache(exchange(), Upstream(CircuitOpen("open")))
