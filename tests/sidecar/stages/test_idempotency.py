"""The idempotency stage directly, on a real store: single-flight, replay, 409/422.

Most tests run on the memory store with a fake clock. The `shared` ones run
twice: on one memory store, and on two RedisStore instances over the same
private redis-server, each behind its own stage instance, the way two
sidecars share Redis.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import orjson
import pytest

from sidecar.clock import SYSTEM_CLOCK, Clock
from sidecar.errors import (
    IdempotencyConflict,
    IdempotencyKeyReused,
    MirApiError,
    StoreUnavailable,
    UpstreamUnreachable,
    error_headers,
)
from sidecar.exchange import Exchange, Response
from sidecar.policy import parse_policy
from sidecar.stages.idempotency import Idempotency, computed_key, fingerprint, store_key
from sidecar.store.base import ClaimOutcome, Store
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock

TARGET = "http://upstream.test/v1/charges"
MAX_BODY = 1024
#: How long a test waits for something that should happen at once.
PATIENCE = 3.0


def exchange(
    method: str = "POST",
    body: bytes = b'{"amount": 100}',
    headers: dict[str, str] | None = None,
    target: str = TARGET,
    client_id: str = "local",
) -> Exchange:
    policy = parse_policy({k.lower(): v for k, v in (headers or {}).items()})
    return Exchange(
        method, "/", "", [], body, policy, "rid-1", client_id=client_id, targets=(target,)
    )


class SpyStore:
    """A store that counts every method called on it, then passes the call on."""

    def __init__(self, inner: Any, calls: Counter[str] | None = None) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter() if calls is None else calls
        self.renew_answer: bool | None = None

    def __getattr__(self, name: str) -> Any:
        self.calls[name] += 1
        if name == "idem_renew" and self.renew_answer is not None:
            answer = self.renew_answer

            async def renew(*_: object) -> bool:
                return answer

            return renew
        return getattr(self.inner, name)


class Upstream:
    """A scripted call_next: counts calls; each may wait on a gate first."""

    def __init__(self, *answers: Callable[[], Response]) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.seen_keys: list[str | None] = []

    async def __call__(self, ex: Exchange) -> Response:
        self.calls += 1
        self.seen_keys.append(ex.idempotency_key)
        await self.gate.wait()
        answer = self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
        return answer()

    def hold(self) -> None:
        self.gate.clear()


def ok(body: bytes = b'{"id": "ch_1"}', status: int = 200) -> Callable[[], Response]:
    return lambda: Response(status, [("content-type", "application/json")], body)


class StreamedBody:
    """An upstream body in chunks, with a record of whether it was closed."""

    def __init__(self, *chunks: bytes, status: int = 200) -> None:
        self.chunks = chunks
        self.status = status
        self.closed = False

    async def _stream(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            await asyncio.sleep(0)
            yield chunk

    async def _close(self) -> None:
        self.closed = True

    def __call__(self) -> Response:
        return Response(
            self.status, [("x-part", "stream")], stream=self._stream(), close=self._close
        )


async def deliver(response: Response) -> bytes:
    """What send_response does: stream the body to the client, then discard."""
    if response.stream is None:
        return response.body
    chunks = []
    try:
        async for chunk in response.stream:
            chunks.append(chunk)
    finally:
        await response.discard()
    return b"".join(chunks)


async def answer(
    stage: Idempotency, ex: Exchange, upstream: Callable[[Exchange], Awaitable[Response]]
) -> tuple[Response, bytes]:
    """One request through the stage, as the client receives it."""
    response = await stage(ex, upstream)
    return response, await deliver(response)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until `condition` holds."""
    async with asyncio.timeout(PATIENCE):
        # Polled: the conditions are counters in other objects, not events.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


def header(response: Response, name: str) -> str | None:
    return next((v for n, v in response.headers if n == name), None)


def rendered(error: MirApiError) -> dict[str, str]:
    return dict(error_headers(error, "rid"))


# -- stores -----------------------------------------------------------------


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory(fake: FakeClock) -> SpyStore:
    return SpyStore(MemoryStore(fake.clock()))


async def _redis_pair(url: str, clock: Clock, calls: Counter[str]) -> list[SpyStore]:
    from sidecar.store.redis import RedisStore

    stores = [SpyStore(RedisStore(url, clock), calls) for _ in range(2)]
    for store in stores:
        await store.open()
    return stores


@pytest.fixture(params=["memory", "redis"])
async def shared(request: pytest.FixtureRequest, fake: FakeClock) -> AsyncIterator[list[SpyStore]]:
    """Two stores sharing state: one memory store twice, or two RedisStores on one server."""
    calls: Counter[str] = Counter()
    if request.param == "memory":
        store = MemoryStore(fake.clock())
        yield [SpyStore(store, calls), SpyStore(store, calls)]
        return
    stores = await _redis_pair(request.getfixturevalue("redis_url"), fake.clock(), calls)
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()


def stages(stores: list[SpyStore], fake: FakeClock | None = None) -> list[Idempotency]:
    clock = fake.clock() if fake is not None else SYSTEM_CLOCK
    return [Idempotency(cast(Store, store), clock, MAX_BODY) for store in stores]


# -- the hot path and the upstream key ----------------------------------------------


class Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was used: {name}")


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
async def test_idempotent_method_without_key_never_touches_the_store(method: str) -> None:
    stage = Idempotency(cast(Store, Untouchable()), SYSTEM_CLOCK, MAX_BODY)
    upstream = Upstream(ok())
    ex = exchange(method, headers={"X-Retry-Count": "3"})
    response, body = await answer(stage, ex, upstream)
    assert (response.status, body, upstream.calls) == (200, b'{"id": "ch_1"}', 1)
    assert upstream.seen_keys == [None]


async def test_upstream_key_is_explicit_else_computed_when_the_post_may_be_resent(
    memory: SpyStore,
) -> None:
    stage = Idempotency(cast(Store, memory), SYSTEM_CLOCK, MAX_BODY)
    upstream = Upstream(ok())
    await answer(stage, exchange(headers={"X-Proxy-Idempotency-Key": "order-7"}), upstream)
    await answer(stage, exchange(body=b"a", headers={"X-Retry-Count": "2"}), upstream)
    await answer(stage, exchange(body=b"b"), upstream)
    assert upstream.seen_keys == ["order-7", computed_key("local", TARGET, "POST", b"a"), None]


# -- single-flight ------------------------------------------------------------------


async def test_six_concurrent_duplicates_make_one_upstream_call(
    shared: list[SpyStore], fake: FakeClock
) -> None:
    first, second = stages(shared, fake)
    upstream = Upstream(ok(b'{"id": "ch_once"}', status=201))
    upstream.hold()
    requests = [
        asyncio.create_task(answer(first if i % 2 == 0 else second, exchange(), upstream))
        for i in range(6)
    ]
    await until(lambda: upstream.calls == 1 and shared[0].calls["idem_wait"] == 5)
    upstream.gate.set()
    async with asyncio.timeout(PATIENCE):
        answers = await asyncio.gather(*requests)
    assert upstream.calls == 1
    assert [(r.status, body) for r, body in answers] == [(201, b'{"id": "ch_once"}')] * 6
    # A computed key: the client asked for no idempotency, nothing says "replayed".
    assert all(header(r, "idempotent-replayed") is None for r, _ in answers)


async def test_explicit_key_replays_the_kept_answer(
    shared: list[SpyStore], fake: FakeClock
) -> None:
    first, second = stages(shared, fake)
    upstream = Upstream(ok(b'{"id": "ch_1"}'), ok(b'{"id": "ch_2"}'))
    keyed = {"X-Proxy-Idempotency-Key": "order-42"}
    original, body = await answer(first, exchange(headers=keyed), upstream)
    fake.advance(3600)
    replay, replay_body = await answer(second, exchange(headers=keyed), upstream)
    assert upstream.calls == 1
    assert (replay.status, replay_body) == (original.status, body) == (200, b'{"id": "ch_1"}')
    assert header(original, "idempotent-replayed") is None
    assert header(replay, "idempotent-replayed") == "true"
    assert header(replay, "content-type") == "application/json"


async def test_explicit_key_waiter_gets_the_answer_marked_replayed(
    shared: list[SpyStore], fake: FakeClock
) -> None:
    first, second = stages(shared, fake)
    upstream = Upstream(ok())
    upstream.hold()
    keyed = {"X-Proxy-Idempotency-Key": "order-9"}
    holder = asyncio.create_task(answer(first, exchange(headers=keyed), upstream))
    waiter = asyncio.create_task(answer(second, exchange(headers=keyed), upstream))
    await until(lambda: shared[0].calls["idem_wait"] == 1)
    upstream.gate.set()
    (held, _), (waited, body) = await asyncio.gather(holder, waiter)
    assert upstream.calls == 1
    assert header(held, "idempotent-replayed") is None
    assert (header(waited, "idempotent-replayed"), body) == ("true", b'{"id": "ch_1"}')


async def test_streamed_answer_is_shared_and_streamed_intact_to_the_holder(
    shared: list[SpyStore], fake: FakeClock
) -> None:
    first, second = stages(shared, fake)
    streamed = StreamedBody(b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n")
    upstream = Upstream(streamed)
    upstream.hold()
    holder = asyncio.create_task(answer(first, exchange(), upstream))
    waiter = asyncio.create_task(answer(second, exchange(), upstream))
    await until(lambda: shared[0].calls["idem_wait"] == 1)
    upstream.gate.set()
    (held, held_body), (waited, waited_body) = await asyncio.gather(holder, waiter)
    whole = b"data: one\n\ndata: two\n\ndata: [DONE]\n\n"
    assert held_body == waited_body == whole
    assert held.stream is not None and waited.stream is None
    assert header(waited, "x-part") == "stream"
    assert streamed.closed
    assert upstream.calls == 1


async def test_a_dead_holder_releases_the_key_to_its_waiter(
    shared: list[SpyStore], fake: FakeClock
) -> None:
    (stage, _) = stages(shared, fake)
    ex = exchange()
    # A holder that took the lock and died without finishing it.
    claim = await shared[1].idem_claim(store_key(ex), fingerprint(ex), "dead-holder", 60.0)
    assert claim.outcome is ClaimOutcome.ACQUIRED
    upstream = Upstream(ok())
    waiter = asyncio.create_task(answer(stage, ex, upstream))
    await until(lambda: shared[0].calls["idem_wait"] == 1)
    assert upstream.calls == 0
    fake.advance(61)
    async with asyncio.timeout(PATIENCE):
        response, body = await waiter
    assert (response.status, body, upstream.calls) == (200, b'{"id": "ch_1"}', 1)


async def test_the_holders_lock_is_renewed_while_a_slow_call_runs() -> None:
    # Real time with a 150 ms lock: renewal runs on the event loop's timer.
    store = SpyStore(MemoryStore(SYSTEM_CLOCK))
    stage = Idempotency(cast(Store, store), SYSTEM_CLOCK, MAX_BODY)
    upstream = Upstream(ok())
    upstream.hold()
    short_lock = {"X-Idempotency-TTL": "150ms"}
    holder = asyncio.create_task(answer(stage, exchange(headers=short_lock), upstream))
    waiter = asyncio.create_task(answer(stage, exchange(headers=short_lock), upstream))
    await until(lambda: store.calls["idem_wait"] == 1)
    # Well past the lock's 150 ms: only renewal keeps it the holder's.
    await asyncio.sleep(0.4)
    assert upstream.calls == 1
    upstream.gate.set()
    async with asyncio.timeout(PATIENCE):
        await asyncio.gather(holder, waiter)
    assert upstream.calls == 1
    assert store.calls["idem_renew"] >= 3


async def test_renewal_stops_once_the_lock_is_no_longer_ours(memory: SpyStore) -> None:
    memory.renew_answer = False
    stage = Idempotency(cast(Store, memory), SYSTEM_CLOCK, MAX_BODY)
    upstream = Upstream(ok())
    upstream.hold()
    holder = asyncio.create_task(
        answer(stage, exchange(headers={"X-Idempotency-TTL": "30ms"}), upstream)
    )
    await asyncio.sleep(0.1)
    upstream.gate.set()
    await holder
    assert memory.calls["idem_renew"] == 1


# -- keys, replays and refusals -----------------------------------------------------


async def test_computed_key_never_replays_a_finished_answer(memory: SpyStore) -> None:
    stage = Idempotency(cast(Store, memory), SYSTEM_CLOCK, MAX_BODY)
    upstream = Upstream(ok(b'{"id": "ch_1"}'), ok(b'{"id": "ch_2"}'))
    _, first_body = await answer(stage, exchange(), upstream)
    later, later_body = await answer(stage, exchange(), upstream)
    assert upstream.calls == 2
    assert (first_body, later_body) == (b'{"id": "ch_1"}', b'{"id": "ch_2"}')
    assert header(later, "idempotent-replayed") is None


@pytest.mark.parametrize(
    "method,target,body",
    [
        ("POST", TARGET, b'{"amount": 999}'),
        ("PATCH", TARGET, b'{"amount": 100}'),
        ("POST", "http://upstream.test/v1/refunds", b'{"amount": 100}'),
    ],
    ids=["body", "method", "target"],
)
async def test_explicit_key_reused_for_another_request_is_422(
    shared: list[SpyStore], fake: FakeClock, method: str, target: str, body: bytes
) -> None:
    first, second = stages(shared, fake)
    upstream = Upstream(ok())
    keyed = {"X-Proxy-Idempotency-Key": "order-1"}
    await answer(first, exchange(headers=keyed), upstream)
    with pytest.raises(IdempotencyKeyReused) as refused:
        await second(exchange(method, body, keyed, target), upstream)
    assert (refused.value.status, refused.value.code) == (422, "idempotency_key_reused")
    assert "X-Proxy-Idempotency-Key" in refused.value.message
    assert "999" not in refused.value.message and "amount" not in refused.value.message
    assert upstream.calls == 1


async def test_explicit_keys_are_per_client(memory: SpyStore) -> None:
    stage = Idempotency(cast(Store, memory), SYSTEM_CLOCK, MAX_BODY)
    upstream = Upstream(ok())
    keyed = {"X-Proxy-Idempotency-Key": "order-1"}
    await answer(stage, exchange(headers=keyed, client_id="alice"), upstream)
    bobs = exchange(body=b"other", headers=keyed, client_id="bob")
    response, _ = await answer(stage, bobs, upstream)
    assert upstream.calls == 2
    assert header(response, "idempotent-replayed") is None


async def test_wait_off_answers_409_while_the_first_is_in_flight(
    shared: list[SpyStore], fake: FakeClock
) -> None:
    first, second = stages(shared, fake)
    upstream = Upstream(ok())
    upstream.hold()
    holder = asyncio.create_task(answer(first, exchange(), upstream))
    await until(lambda: upstream.calls == 1)
    with pytest.raises(IdempotencyConflict) as refused:
        await second(exchange(headers={"X-Idempotency-Wait": "off"}), upstream)
    assert (refused.value.status, refused.value.code) == (409, "idempotency_in_flight")
    assert rendered(refused.value)["retry-after"] == "1"
    upstream.gate.set()
    await holder
    assert upstream.calls == 1


async def test_5xx_is_not_kept_for_replay(memory: SpyStore, fake: FakeClock) -> None:
    stage = Idempotency(cast(Store, memory), fake.clock(), MAX_BODY)
    upstream = Upstream(ok(b"down", status=503), ok(b"up"), ok(b"again"))
    keyed = {"X-Proxy-Idempotency-Key": "order-5"}
    failed, _ = await answer(stage, exchange(headers=keyed), upstream)
    retried, retried_body = await answer(stage, exchange(headers=keyed), upstream)
    replay, replay_body = await answer(stage, exchange(headers=keyed), upstream)
    assert (failed.status, retried.status, retried_body) == (503, 200, b"up")
    assert header(retried, "idempotent-replayed") is None
    assert (header(replay, "idempotent-replayed"), replay_body) == ("true", b"up")
    assert upstream.calls == 2


async def test_4xx_is_kept_for_replay(memory: SpyStore, fake: FakeClock) -> None:
    stage = Idempotency(cast(Store, memory), fake.clock(), MAX_BODY)
    upstream = Upstream(ok(b"card declined", status=402))
    keyed = {"X-Proxy-Idempotency-Key": "order-6"}
    await answer(stage, exchange(headers=keyed), upstream)
    replay, body = await answer(stage, exchange(headers=keyed), upstream)
    assert (replay.status, body, upstream.calls) == (402, b"card declined", 1)


async def test_replay_ends_with_the_replay_ttl(memory: SpyStore, fake: FakeClock) -> None:
    stage = Idempotency(cast(Store, memory), fake.clock(), MAX_BODY, replay_ttl=60)
    upstream = Upstream(ok())
    keyed = {"X-Proxy-Idempotency-Key": "order-8"}
    await answer(stage, exchange(headers=keyed), upstream)
    fake.advance(61)
    response, _ = await answer(stage, exchange(headers=keyed), upstream)
    assert upstream.calls == 2
    assert header(response, "idempotent-replayed") is None


async def test_sidecar_error_is_shared_with_waiters_and_not_kept(
    memory: SpyStore, fake: FakeClock
) -> None:
    stage = Idempotency(cast(Store, memory), fake.clock(), MAX_BODY)
    gate = asyncio.Event()
    calls = 0

    async def unreachable(_: Exchange) -> Response:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise UpstreamUnreachable("the upstream could not be reached (refused)")

    keyed = {"X-Proxy-Idempotency-Key": "order-3"}
    holder = asyncio.create_task(stage(exchange(headers=keyed), unreachable))
    waiter = asyncio.create_task(answer(stage, exchange(headers=keyed), unreachable))
    await until(lambda: memory.calls["idem_wait"] == 1)
    gate.set()
    with pytest.raises(UpstreamUnreachable):
        await holder
    shared_error, body = await waiter
    assert shared_error.status == 502
    assert orjson.loads(body)["error"]["code"] == "upstream_unreachable"
    assert header(shared_error, "x-request-id") is None  # the waiter's own is added later
    assert calls == 1
    # Not kept: the client may try the same key again.
    upstream = Upstream(ok())
    response, _ = await answer(stage, exchange(headers=keyed), upstream)
    assert (response.status, upstream.calls) == (200, 1)


# -- every way a holder can end releases the key ------------------------------------


async def key_is_free(store: SpyStore, ex: Exchange) -> bool:
    claim = await store.idem_claim(store_key(ex), fingerprint(ex), "probe-token", 60.0)
    return bool(claim.outcome is ClaimOutcome.ACQUIRED)


async def test_discarded_response_releases_the_key(memory: SpyStore, fake: FakeClock) -> None:
    stage = Idempotency(cast(Store, memory), fake.clock(), MAX_BODY)
    streamed = StreamedBody(b"never", b"read")
    upstream = Upstream(streamed)
    upstream.hold()
    holder = asyncio.create_task(stage(exchange(), upstream))
    waiter = asyncio.create_task(answer(stage, exchange(), Upstream(ok(b"own call"))))
    await until(lambda: memory.calls["idem_wait"] == 1)
    upstream.gate.set()
    response = await holder
    await response.discard()
    _, body = await waiter
    assert body == b"own call"
    assert streamed.closed
    assert await key_is_free(memory, exchange())


async def test_client_gone_mid_stream_releases_the_key(memory: SpyStore, fake: FakeClock) -> None:
    stage = Idempotency(cast(Store, memory), fake.clock(), MAX_BODY)
    response = await stage(exchange(), Upstream(StreamedBody(b"one", b"two", b"three")))
    assert response.stream is not None
    assert await anext(response.stream) == b"one"
    await response.discard()  # what send_response does when the client goes away
    assert await key_is_free(memory, exchange())


async def test_broken_stream_releases_the_key_unshared(memory: SpyStore, fake: FakeClock) -> None:
    stage = Idempotency(cast(Store, memory), fake.clock(), MAX_BODY)

    async def breaking() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionResetError("reset mid-body")

    def broken() -> Response:
        return Response(200, [], stream=breaking())

    keyed = {"X-Proxy-Idempotency-Key": "order-4"}
    with pytest.raises(ConnectionResetError):
        await answer(stage, exchange(headers=keyed), Upstream(broken))
    # Nothing kept for replay: the next try calls the upstream.
    upstream = Upstream(ok())
    response, _ = await answer(stage, exchange(headers=keyed), upstream)
    assert (upstream.calls, header(response, "idempotent-replayed")) == (1, None)


async def test_cancelled_holder_releases_the_key(memory: SpyStore, fake: FakeClock) -> None:
    stage = Idempotency(cast(Store, memory), fake.clock(), MAX_BODY)
    upstream = Upstream(ok())
    upstream.hold()
    holder = asyncio.create_task(stage(exchange(), upstream))
    await until(lambda: upstream.calls == 1)
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert await key_is_free(memory, exchange())


async def test_answer_over_max_body_is_not_shared_nor_kept(
    memory: SpyStore, fake: FakeClock
) -> None:
    stage = Idempotency(cast(Store, memory), fake.clock(), max_body=8)
    big = StreamedBody(b"0123456", b"789abcdef")
    upstream = Upstream(big, ok(b"second"))
    upstream.hold()
    keyed = {"X-Proxy-Idempotency-Key": "order-big"}
    holder = asyncio.create_task(answer(stage, exchange(headers=keyed), upstream))
    waiter = asyncio.create_task(answer(stage, exchange(headers=keyed), upstream))
    await until(lambda: memory.calls["idem_wait"] == 1)
    upstream.gate.set()
    (_, held_body), (waited, waited_body) = await asyncio.gather(holder, waiter)
    assert held_body == b"0123456789abcdef"  # the holder's client still gets it all
    assert (waited_body, header(waited, "idempotent-replayed")) == (b"second", None)
    assert upstream.calls == 2


# -- the store failing ---------------------------------------------------------------


class DownStore:
    def __getattr__(self, name: str) -> Any:
        async def unavailable(*_: object) -> None:
            raise StoreUnavailable("the store did not answer")

        return unavailable


async def test_store_down_fails_open() -> None:
    stage = Idempotency(cast(Store, DownStore()), SYSTEM_CLOCK, MAX_BODY)
    upstream = Upstream(ok())
    response, body = await answer(
        stage, exchange(headers={"X-Proxy-Idempotency-Key": "k"}), upstream
    )
    assert (response.status, body, upstream.calls) == (200, b'{"id": "ch_1"}', 1)
