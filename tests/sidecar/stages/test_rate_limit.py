"""The rate limit stage: a token bucket per client, and per client per route (issue 7)."""

from __future__ import annotations

import pytest

from sidecar.errors import RateLimited, StoreUnavailable
from sidecar.exchange import Exchange, Response
from sidecar.policy import parse_policy
from sidecar.routing.routes import Endpoint, Route, RouteError, parse_route
from sidecar.stages.rate_limit import RateLimit, client_of
from sidecar.store.base import RateDecision
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock


def exchange(
    client_id: str = "local", address: str = "127.0.0.1", route: Route | None = None
) -> Exchange:
    headers = [("x-target-url", "https://upstream.test")]
    return Exchange(
        "GET",
        "/",
        "",
        headers,
        b"",
        parse_policy(dict(headers)),
        "rid",
        client_id=client_id,
        client_address=address,
        route=route,
    )


async def answer(_: Exchange) -> Response:
    return Response(200, [])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_over_the_limit_is_429_with_retry_after_then_recovers(clock: FakeClock) -> None:
    stage = RateLimit(MemoryStore(clock.clock()), "2/sec")
    first = await stage(exchange(), answer)
    assert ("ratelimit-limit", "2") in first.headers
    assert ("ratelimit-remaining", "1") in first.headers
    second = await stage(exchange(), answer)
    assert ("ratelimit-remaining", "0") in second.headers
    with pytest.raises(RateLimited) as refused:
        await stage(exchange(), answer)
    assert refused.value.status == 429
    assert refused.value.code == "rate_limited"
    assert refused.value.retry_after == 1
    assert ("ratelimit-remaining", "0") in refused.value.headers
    assert ("ratelimit-limit", "2") in refused.value.headers
    clock.advance(0.5)  # one token back at 2/sec
    assert (await stage(exchange(), answer)).status == 200


async def test_each_client_has_its_own_bucket(clock: FakeClock) -> None:
    stage = RateLimit(MemoryStore(clock.clock()), "1/min")
    await stage(exchange(client_id="key1"), answer)
    await stage(exchange(client_id="key2"), answer)
    await stage(exchange(address="127.0.0.2"), answer)
    with pytest.raises(RateLimited) as refused:
        await stage(exchange(client_id="key1"), answer)
    assert refused.value.retry_after == 60


def test_a_client_is_its_key_else_its_address() -> None:
    assert client_of(exchange(client_id="abc", address="10.0.0.1")) == "key:abc"
    assert client_of(exchange(address="10.0.0.1")) == "addr:10.0.0.1"
    assert client_of(exchange(address="")) == "addr:local"


async def test_a_route_limit_applies_on_top_and_the_tightest_is_reported(clock: FakeClock) -> None:
    route = Route("pay", (Endpoint("https://pay.test"),), rate_limit="1/min")
    stage = RateLimit(MemoryStore(clock.clock()), "100/min")
    first = await stage(exchange(route=route), answer)
    assert ("ratelimit-limit", "1") in first.headers
    with pytest.raises(RateLimited):
        await stage(exchange(route=route), answer)
    # Off the route, only the sidecar's own limit counts.
    other = await stage(exchange(), answer)
    assert ("ratelimit-limit", "100") in other.headers


async def test_without_any_limit_nothing_is_added(clock: FakeClock) -> None:
    response = await RateLimit(MemoryStore(clock.clock()), None)(exchange(), answer)
    assert not any(name.startswith("ratelimit") for name, _ in response.headers)


class DownStore(MemoryStore):
    async def rate_take(self, key: str, limit: int, period: float) -> RateDecision:
        raise StoreUnavailable("redis unreachable")


async def test_a_store_that_does_not_answer_lets_the_request_through(clock: FakeClock) -> None:
    response = await RateLimit(DownStore(clock.clock()), "1/min")(exchange(), answer)
    assert response.status == 200


def test_a_route_rate_limit_is_validated_and_normalised() -> None:
    table = {"endpoints": [{"url": "https://pay.test"}], "rate_limit": "10 / MIN"}
    assert parse_route("pay", table).rate_limit == "10/min"
    with pytest.raises(RouteError, match="rate_limit"):
        parse_route("pay", {**table, "rate_limit": "lots"})
    with pytest.raises(RouteError, match="rate_limit"):
        parse_route("pay", {**table, "rate_limit": 10})
