"""Header parsing at the edge: typed values, or 400 bad_header naming the header."""

from __future__ import annotations

import pytest

from sidecar.errors import BadHeader, BadRequest
from sidecar.policy import parse_policy, parse_target_url
from sidecar.stages.routing import join_target, split_path_mode


def test_defaults_and_values() -> None:
    policy = parse_policy(
        {
            "x-target-url": "https://api.stripe.com",
            "x-retry-count": "3",
            "x-retry-delay": "250ms",
            "x-timeout": "5s",
            "x-deadline": "1m",
            "x-retry-on": "gateway-error, 409,reset",
            "x-failover-url": "https://a.example, https://b.example/v1",
        }
    )
    assert policy.retry_count == 3
    assert policy.retry_delay == 0.25
    assert policy.timeout == 5
    assert policy.deadline == 60
    assert policy.retry_on.status_is_retryable(503)
    assert not policy.retry_on.status_is_retryable(500)
    assert policy.retry_on.status_is_retryable(409)
    assert policy.retry_on.failure_is_retryable("reset")
    assert not policy.retry_on.failure_is_retryable("timeout")
    assert policy.failover_urls == ("https://a.example", "https://b.example/v1")
    assert parse_policy({"x-timeout": "1500"}).timeout == 1.5


def test_cache_breaker_and_idempotency_headers() -> None:
    policy = parse_policy(
        {
            "x-smart-cache": "5m; serve-fresh",
            "x-circuit-breaker": "on; threshold=3; cooldown=10s",
            "x-idempotency-wait": "off",
            "x-idempotency-ttl": "2m",
        }
    )
    assert policy.smart_cache is not None
    assert (policy.smart_cache.ttl, policy.smart_cache.serve_fresh) == (300, True)
    assert policy.circuit_breaker is not None
    assert (policy.circuit_breaker.threshold, policy.circuit_breaker.cooldown) == (3, 10)
    assert policy.idempotency_wait is False
    assert policy.idempotency_lock_ttl == 120
    defaults = parse_policy({"x-circuit-breaker": "on", "x-smart-cache": "30s"})
    assert defaults.circuit_breaker is not None
    assert (defaults.circuit_breaker.threshold, defaults.circuit_breaker.cooldown) == (5, 30)
    assert defaults.smart_cache is not None and not defaults.smart_cache.serve_fresh
    off = parse_policy({"x-circuit-breaker": "off", "x-smart-cache": "off"})
    assert off.circuit_breaker is None and off.smart_cache is None


@pytest.mark.parametrize(
    "header,value",
    [
        ("x-retry-count", "11"),
        ("x-retry-count", "-1"),
        ("x-retry-count", "lots"),
        ("x-retry-delay", "5 parsecs"),
        ("x-timeout", "0"),
        ("x-target-url", "ftp://example.com"),
        ("x-target-url", "not a url"),
        ("x-target-url", "http://host:99999/"),
        ("x-failover-url", ","),
        ("x-retry-on", "whenever"),
        ("x-proxy-debug", "loud"),
        ("x-smart-cache", "5 parsecs"),
        ("x-smart-cache", "0s"),
        ("x-smart-cache", "5m; serve-stale"),
        ("x-smart-cache", "5m; serve-fresh=yes"),
        ("x-circuit-breaker", "maybe"),
        ("x-circuit-breaker", "on; threshold=0"),
        ("x-circuit-breaker", "on; threshold=lots"),
        ("x-circuit-breaker", "on; cooldown=soon"),
        ("x-circuit-breaker", "on; window=5"),
        ("x-circuit-breaker", "off; threshold=3"),
        ("x-idempotency-wait", "sometimes"),
        ("x-idempotency-ttl", "0"),
        ("x-retry-count", "\u00b2"),
        ("x-retry-on", "5\u00b200"),
        ("x-circuit-breaker", "on; threshold=\u00b2"),
    ],
)
def test_bad_values_name_the_header(header: str, value: str) -> None:
    with pytest.raises(BadHeader) as caught:
        parse_policy({header: value})
    assert caught.value.header.lower() == header
    assert caught.value.status == 400 and caught.value.code == "bad_header"


@pytest.mark.parametrize(
    "target,path,query,expected",
    [
        ("https://api.stripe.com", "/v1/charges", "x=1", "https://api.stripe.com/v1/charges?x=1"),
        ("https://httpbin.org/post", "/", "", "https://httpbin.org/post"),
        ("https://h/base/", "/v1", "", "https://h/base/v1"),
        ("https://h/p?key=1", "/q", "a=2", "https://h/p/q?key=1&a=2"),
    ],
)
def test_joining_rule(target: str, path: str, query: str, expected: str) -> None:
    assert join_target(target, path, query) == expected


def test_path_mode_split() -> None:
    assert split_path_mode("/r/payments/v1/charges") == ("payments", "/v1/charges")
    assert split_path_mode("/r/payments") == ("payments", "")
    assert split_path_mode("/v1/x") is None


#: Hosts that are neither a host name nor an IP literal: refused by the parser,
#: before any name lookup, for every header that takes a URL (SPEC §2).
MALFORMED_TARGETS = [
    ("http://127.0.0.1\t/x", "TAB"),  # urllib drops the TAB; httpx refused it (500)
    ("http://127.0.0.1:9/a\tb", "TAB"),
    ("http://127.0.0.1 :9/", "space"),
    ("http://127.0.0.1\r\n:9/", "control character"),
    ("http://%31%32%37.0.0.1:9/", "not a valid host name"),
    ("http://\uff11\uff12\uff17.0.0.1:9/", "xn--"),  # full-width digits
    ("https://b\u00fccher.example/", "xn--"),
    ("http://127.0.0.1:9\\@127.0.0.2/", "backslash"),
    ("http://a@b@127.0.0.2:9/", "user:password"),
    ("http://127.0.0.1:9@/", "no host"),
    ("http://[::1%25lo]:9/", "zone id"),
    ("http://[127.0.0.1]/", "URL"),
    ("http://[::1/", "IPv6"),
    ("http://h_1.exa mple/", "space"),
    ("http://" + "a" * 64 + ".example/", "not a valid host name"),
    ("http://127.0.0.1:9x/", "port"),
    ("http://127.0.0.1: 9/", "space"),
    ("http:127.0.0.1/", "absolute"),
    ("http://h/#", "fragment"),
]


@pytest.mark.parametrize(("url", "said"), MALFORMED_TARGETS)
@pytest.mark.parametrize("header", ["x-target-url", "x-failover-url", "x-webhook-callback"])
def test_a_malformed_target_host_is_a_bad_header(header: str, url: str, said: str) -> None:
    with pytest.raises(BadHeader) as caught:
        parse_policy({header: url})
    assert caught.value.header.lower() == header
    assert said in caught.value.reason


@pytest.mark.parametrize(
    "url",
    ["http://\uff11\uff12\uff17.0.0.1:9/", "https://b\u00fccher.example/", "http://\u0661.1.1.1/"],
)
def test_a_route_endpoint_host_that_is_not_ascii_is_refused(url: str) -> None:
    # Route endpoints are text from TOML: the parser itself refuses the host.
    with pytest.raises(BadHeader) as caught:
        parse_target_url("url", url)
    assert "xn--" in caught.value.reason


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9",
        "https://api.stripe.com/v1?x=1",
        "HTTPS://API.Example.COM./",
        "http://[::1]:8080/x",
        "http://user:p%40ss@api.example:443/",
        "http://my_service:80/",
        "http://2130706433/",  # odd IPv4 spellings are the egress policy's to judge
        "http://xn--bcher-kva.example/",
        "  http://h/  ",
    ],
)
def test_host_names_and_ip_literals_pass(url: str) -> None:
    assert parse_target_url("X-Target-URL", url) == url.strip()


@pytest.mark.parametrize(
    "header", ["x-route-key", "x-request-id", "idempotency-key", "x-proxy-idempotency-key"]
)
def test_an_id_or_key_must_be_printable_ascii(header: str) -> None:
    # Echoed in answers and stored: "r\u00e9q-1" would come back mangled.
    with pytest.raises(BadHeader) as caught:
        parse_policy({header: "r\u00e9q-1"})
    assert caught.value.header.lower() == header
    assert "ASCII" in caught.value.reason


def test_a_json_pointer_may_name_any_member() -> None:
    assert parse_policy({"x-extract": "/donn\u00e9es/0"}).extract == "/donn\u00e9es/0"


@pytest.mark.parametrize("path", ["@127.0.0.2:9/echo", "echo", "*", "http://h/x"])
def test_joining_refuses_a_path_that_would_become_part_of_the_host(path: str) -> None:
    with pytest.raises(BadRequest):
        join_target("http://127.0.0.1:9", path, "")


async def test_a_stored_endpoint_with_a_malformed_host_is_never_called() -> None:
    from sidecar.errors import RouteInvalid
    from sidecar.exchange import Exchange, Response
    from sidecar.routing.routes import Endpoint, Route
    from sidecar.stages.routing import Routing

    # Stored before `routes add` checked hosts: refused without a lookup.
    old = Route("old", (Endpoint("http://%31%32%37.0.0.1:9/"),))
    headers = {"x-route-key": "old"}
    exchange = Exchange("GET", "/", "", list(headers.items()), b"", parse_policy(headers), "rid")

    async def never(_: Exchange) -> Response:
        raise AssertionError("called")

    with pytest.raises(RouteInvalid) as caught:
        await Routing({"old": old})(exchange, never)
    assert "endpoint 1" in caught.value.message
