"""The routing stage directly: header mode, path mode, route defaults and endpoints."""

from __future__ import annotations

import pytest

from sidecar.errors import BadHeader, NoTarget, NotFound, RouteInvalid
from sidecar.exchange import Exchange, Response
from sidecar.policy import parse_policy
from sidecar.routing.routes import Endpoint, Route, RouteDefaults
from sidecar.stages.forward import Forward
from sidecar.stages.routing import Routing
from sidecar.stages.strip_headers import StripHeaders

PAY = Route(
    name="pay",
    endpoints=(
        Endpoint("https://primary.test/base"),
        Endpoint(
            "https://backup.test/api?v=2",
            headers=(("Stripe-Version", "2024-06-20"), ("X-Retry-Count", "9"), ("Host", "x")),
            timeout=2.5,
        ),
    ),
    defaults=RouteDefaults((("X-Retry-Count", "3"), ("X-Timeout", "5s"))),
)
ROUTES = {"pay": PAY}


def exchange(path: str = "/", query: str = "", **headers: str) -> Exchange:
    """An exchange as the edge builds it: lower-case headers, the policy parsed."""
    lowered = [(name.replace("_", "-").lower(), value) for name, value in headers.items()]
    policy = parse_policy(dict(lowered), 30.0)
    return Exchange("POST", path, query, lowered, b"amount=100", policy, "rid")


async def route(ex: Exchange, routes: dict[str, Route] | None = None) -> Exchange:
    """Run Routing on `ex`; the exchange as the next stage saw it."""

    async def call_next(seen: Exchange) -> Response:
        return Response(200, [])

    await Routing(ROUTES if routes is None else routes)(ex, call_next)
    return ex


async def test_header_mode_joins_every_endpoint_with_the_path_and_query() -> None:
    ex = await route(exchange("/v1/charges", "a=1&b=2", X_Route_Key="pay"))
    assert ex.route is PAY
    assert ex.targets == (
        "https://primary.test/base/v1/charges?a=1&b=2",
        "https://backup.test/api/v1/charges?v=2&a=1&b=2",
    )


async def test_path_mode_needs_no_header_and_keeps_the_rest_of_the_path() -> None:
    ex = await route(exchange("/r/pay/v1/charges/ch_1", "expand=customer"))
    assert ex.route is PAY
    assert ex.path == "/v1/charges/ch_1"
    assert ex.targets[0] == "https://primary.test/base/v1/charges/ch_1?expand=customer"


async def test_path_mode_with_nothing_after_the_name_calls_the_endpoint_as_it_is() -> None:
    ex = await route(exchange("/r/pay"))
    assert ex.targets == ("https://primary.test/base", "https://backup.test/api?v=2")


async def test_the_route_key_comes_before_path_mode_and_the_target_url() -> None:
    other = Route("other", (Endpoint("https://other.test"),))
    ex = await route(
        exchange("/r/pay/x", X_Route_Key="other", X_Target_URL="https://ignored.test"),
        {"pay": PAY, "other": other},
    )
    assert ex.route is other
    assert ex.targets == ("https://other.test/r/pay/x",)


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/v1", {"X_Route_Key": "nope"}), ("/r/nope/v1", {})],
)
async def test_an_unknown_route_is_404_route_not_found(path: str, headers: dict[str, str]) -> None:
    with pytest.raises(NotFound) as raised:
        await route(exchange(path, **headers))
    assert raised.value.status == 404
    assert raised.value.code == "route_not_found"
    assert "nope" in raised.value.message


async def test_without_a_route_table_every_route_is_unknown() -> None:
    async def call_next(_: Exchange) -> Response:
        return Response(200, [])

    with pytest.raises(NotFound):
        await Routing()(exchange("/r/pay/x"), call_next)


async def test_target_url_mode_is_unchanged() -> None:
    ex = await route(
        exchange(
            "/v1/charges",
            "x=1",
            X_Target_URL="https://api.test",
            X_Failover_URL="https://b.test/p",
        )
    )
    assert ex.route is None
    assert ex.targets == ("https://api.test/v1/charges?x=1", "https://b.test/p/v1/charges?x=1")
    assert ex.target_options == ()


async def test_no_target_at_all_is_400_no_target() -> None:
    with pytest.raises(NoTarget):
        await route(exchange("/v1"))


async def test_route_defaults_apply_when_the_request_says_nothing() -> None:
    ex = await route(exchange("/r/pay/x"))
    assert ex.policy.retry_count == 3
    assert ex.policy.timeout == 5.0


async def test_a_request_header_overrides_only_its_own_default() -> None:
    ex = await route(exchange("/r/pay/x", X_Retry_Count="1", X_Request_ID="req-7"))
    assert ex.policy.retry_count == 1
    assert ex.policy.timeout == 5.0
    assert ex.policy.request_id == "req-7"


async def test_a_route_without_defaults_keeps_the_sidecar_default_timeout() -> None:
    bare = Route("bare", (Endpoint("https://a.test"),))
    ex = exchange("/r/bare/x")
    ex.policy = parse_policy({}, 12.0)
    await route(ex, {"bare": bare})
    assert ex.policy.timeout == 12.0


async def test_a_bad_stored_default_is_the_routes_fault_not_the_clients() -> None:
    broken = Route(
        "broken", (Endpoint("https://a.test"),), defaults=RouteDefaults((("X-Timeout", "soon"),))
    )
    with pytest.raises(RouteInvalid) as raised:
        await route(exchange("/r/broken/x"), {"broken": broken})
    assert raised.value.status == 500
    assert raised.value.code == "route_invalid"
    assert "broken" in raised.value.message and "X-Timeout" in raised.value.message


async def test_a_default_for_a_header_routes_may_not_set_is_refused() -> None:
    sneaky = Route(
        "sneaky",
        (Endpoint("https://a.test"),),
        defaults=RouteDefaults((("X-Target-URL", "https://evil.test"),)),
    )
    with pytest.raises(RouteInvalid):
        await route(exchange("/r/sneaky/x"), {"sneaky": sneaky})


async def test_failover_urls_do_not_mix_with_a_route() -> None:
    with pytest.raises(BadHeader) as raised:
        await route(exchange("/r/pay/x", X_Failover_URL="https://b.test"))
    assert raised.value.header == "X-Failover-URL"


async def test_endpoint_options_follow_each_endpoint_without_proxy_headers() -> None:
    ex = await route(exchange("/r/pay/x"))
    seen = []
    for index in (0, 1):
        ex.aim(index)
        seen.append((ex.options.headers, ex.attempt_timeout))
    assert seen == [((), 5.0), ((("stripe-version", "2024-06-20"),), 2.5)]


async def test_the_requests_own_timeout_beats_an_endpoints() -> None:
    ex = await route(exchange("/r/pay/x", X_Timeout="7s"))
    ex.aim(1)
    assert ex.attempt_timeout == 7.0


class RecordingClient:
    """Stands in for UpstreamClient: records what one attempt would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[str, str]], float]] = []

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float
    ) -> Response:
        self.sent.append((url, headers, timeout))
        return Response(200, [])


async def test_forward_sends_the_endpoints_headers_and_timeout() -> None:
    ex = await route(
        exchange(
            "/r/pay/x", Stripe_Version="2020-01-01", Authorization="Bearer k", X_Smart_Cache="5m"
        )
    )
    client = RecordingClient()
    terminal = Forward(client)  # type: ignore[arg-type]
    for index in (0, 1):
        ex.aim(index)
        await StripHeaders()(ex, terminal)

    (first_url, first, first_timeout), (second_url, second, second_timeout) = client.sent
    assert first_url == "https://primary.test/base/x"
    assert ("stripe-version", "2020-01-01") in first and first_timeout == 5.0
    assert second_url == "https://backup.test/api/x?v=2"
    assert [v for n, v in second if n == "stripe-version"] == ["2024-06-20"]
    assert ("authorization", "Bearer k") in second
    assert second_timeout == 2.5
    for headers in (first, second):
        names = {name for name, _ in headers}
        assert not any(n.startswith(("x-retry-", "x-smart-", "x-route-")) for n in names)
        assert "host" not in names
