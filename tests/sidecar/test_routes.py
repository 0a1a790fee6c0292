"""Route definitions: validation naming the fault, TOML and JSON round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.durations import parse_duration
from sidecar.routing import routes
from sidecar.routing.routes import (
    Endpoint,
    Route,
    RouteDefaults,
    RouteError,
    format_duration,
    parse_route,
    routes_from_toml,
    routes_to_toml,
    table_from_flags,
)

FULL = """\
[routes.payments]
strategy = "priority"
retry = 2
retry_delay = "200ms"
retry_on = "5xx, 409"
timeout = "10s"
deadline = "30s"
smart_cache = "5m; serve-fresh"
circuit_breaker = "on; threshold=3; cooldown=10s"
secret = "stripe"
pci_guard = false

[[routes.payments.endpoints]]
url = "https://api.stripe.com"
timeout = "5s"
headers = { "Stripe-Version" = "2024-06-20" }

[[routes.payments.endpoints]]
url = "https://backup.example/v1?region=eu"
secret = "backup"

[routes."llm.fast"]
strategy = "race"
race_writes = true
circuit_breaker = true
endpoints = [{ url = "http://127.0.0.1:8080/" }, { url = "https://b.example", timeout = "1500ms" }]
"""


def ok_table(**overrides: Any) -> dict[str, Any]:
    return {"endpoints": [{"url": "https://api.example.com"}], **overrides}


def test_a_full_definition_is_read_into_a_route() -> None:
    payments, llm = routes_from_toml(FULL)

    assert payments == Route(
        name="payments",
        endpoints=(
            Endpoint("https://api.stripe.com", (("Stripe-Version", "2024-06-20"),), 5.0),
            Endpoint("https://backup.example/v1?region=eu", secret="backup"),
        ),
        strategy="priority",
        defaults=RouteDefaults(
            (
                ("X-Retry-Count", "2"),
                ("X-Retry-Delay", "200ms"),
                ("X-Retry-On", "5xx, 409"),
                ("X-Timeout", "10s"),
                ("X-Deadline", "30s"),
                ("X-Smart-Cache", "5m; serve-fresh"),
                ("X-Circuit-Breaker", "on; threshold=3; cooldown=10s"),
            )
        ),
        secret="stripe",
        pci_guard=False,
    )
    assert llm.name == "llm.fast"
    assert (llm.strategy, llm.race_writes, llm.pci_guard) == ("race", True, True)
    assert llm.defaults.headers == (("X-Circuit-Breaker", "on"),)
    assert llm.endpoints[1].timeout == 1.5


def test_the_defaults_are_the_documented_ones() -> None:
    route = parse_route("r", ok_table())
    assert (route.strategy, route.secret, route.pci_guard, route.race_writes) == (
        "priority",
        None,
        True,
        False,
    )
    assert route.defaults.headers == ()


def test_equal_definitions_give_equal_routes() -> None:
    # Key order, spacing and a retry written as a string do not matter.
    first = parse_route("r", ok_table(retry=3, timeout="5s"))
    second = parse_route("r", {"timeout": " 5s ", "retry": "03", **ok_table()})
    assert first == second


@pytest.mark.parametrize(
    ("name", "table", "message"),
    [
        (
            "r",
            ok_table(endpoints=[{"url": "api.example.com"}]),
            "route 'r': endpoint 1: url 'api.example.com': must be an absolute http",
        ),
        (
            "r",
            ok_table(endpoints=[{"url": "https://a.example"}, {"url": "ftp://files.example"}]),
            "route 'r': endpoint 2: url 'ftp://files.example': must be an absolute http",
        ),
        (
            "r",
            ok_table(endpoints=[{"url": "https://"}]),
            "endpoint 1: url 'https://': the URL has no host",
        ),
        (
            "r",
            ok_table(endpoints=[{"url": "https://a:99999"}]),
            "endpoint 1: url 'https://a:99999': the URL's port",
        ),
        (
            "r",
            ok_table(endpoints=[{"url": "https://a/#x"}]),
            "endpoint 1: url 'https://a/': the URL must not have a #fragment",
        ),
        (
            "r",
            ok_table(endpoints=[{"timeout": "5s"}]),
            "endpoint 1: url: give the endpoint's http(s) URL",
        ),
        (
            "r",
            ok_table(endpoints=[{"url": "https://a", "weight": 2}]),
            "endpoint 1: unknown key 'weight'",
        ),
        ("r", ok_table(endpoints=["https://a"]), "endpoint 1: must be a table with a url"),
        (
            "r",
            ok_table(strategy="fastest"),
            "route 'r': strategy: 'fastest' is not one of priority, race",
        ),
        ("r", ok_table(endpoints=[]), "route 'r': endpoints: give at least one endpoint"),
        ("r", {"strategy": "race"}, "route 'r': endpoints: give at least one endpoint"),
        ("r", ok_table(endpoints="https://a"), "route 'r': endpoints: give at least one endpoint"),
        (
            "r",
            ok_table(endpoints=[{"url": "https://a"}] * 17),
            "endpoints: 17 endpoints; at most 16",
        ),
        ("r", ok_table(timeout="soon"), "route 'r': timeout: 'soon' is not a duration"),
        ("r", ok_table(timeout="0s"), "route 'r': timeout: must be longer than zero"),
        (
            "r",
            ok_table(retry_delay="5 minutes"),
            "route 'r': retry_delay: '5 minutes' is not a duration",
        ),
        (
            "r",
            ok_table(deadline=30),
            "route 'r': deadline: must be a string, as the X-Deadline header",
        ),
        ("r", ok_table(retry=11), "route 'r': retry: '11' is not a whole number from 0 to 10"),
        ("r", ok_table(retry=-1), "route 'r': retry: '-1' is not a whole number from 0 to 10"),
        ("r", ok_table(retry="two"), "route 'r': retry: 'two' is not a whole number"),
        ("r", ok_table(retry=True), "route 'r': retry: must be a string"),
        ("r", ok_table(retry="²"), "route 'r': retry: '²' is not a whole number from 0 to 10"),
        ("r", ok_table(retry_on="5xx, teapot"), "route 'r': retry_on: 'teapot' is not one of"),
        (
            "r",
            ok_table(smart_cache="5m; stale"),
            "route 'r': smart_cache: unknown parameter 'stale'",
        ),
        (
            "r",
            ok_table(circuit_breaker="on; threshold=0"),
            "route 'r': circuit_breaker: threshold '0'",
        ),
        (
            "r",
            ok_table(endpoints=[{"url": "https://a", "timeout": "later"}]),
            "endpoint 1: timeout: 'later' is not a duration",
        ),
        (
            "r",
            ok_table(endpoints=[{"url": "https://a", "timeout": 5}]),
            "endpoint 1: timeout: must be a duration string",
        ),
        (
            "r",
            ok_table(endpoints=[{"url": "https://a", "timeout": "0ms"}]),
            "endpoint 1: timeout: must be longer than zero",
        ),
        ("r", ok_table(retries=2), "route 'r': unknown key 'retries' (known: strategy, retry,"),
        ("r", ok_table(pci_guard="off"), "route 'r': pci_guard: must be true or false"),
        (
            "r",
            ok_table(race_writes=True),
            "route 'r': race_writes: only means something with strategy",
        ),
        ("r", ok_table(secret="my secret"), "route 'r': secret: must be the name of a secret"),
        ("r", ok_table(secret=1), "route 'r': secret: must be the name of a secret"),
        ("", ok_table(), "bad route name '': use 1 to 64 letters"),
        ("a b", ok_table(), "bad route name 'a b'"),
        ("-leading", ok_table(), "bad route name '-leading'"),
        ("a/b", ok_table(), "bad route name 'a/b'"),
        ("x" * 65, ok_table(), "bad route name"),
    ],
)
def test_a_bad_definition_is_refused_naming_the_problem(
    name: str, table: dict[str, Any], message: str
) -> None:
    with pytest.raises(RouteError) as caught:
        parse_route(name, table)
    assert message in str(caught.value)
    assert caught.value.message == str(caught.value)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-Retry-Count": "3"}, "'X-Retry-Count' is a proxy header"),
        ({"X-Mirapi-Key": "k"}, "'X-Mirapi-Key' is a proxy header"),
        ({"x-target-url": "https://b"}, "'x-target-url' is a proxy header"),
        ({"X-Timeout": "1s"}, "'X-Timeout' is a proxy header"),
        ({"X-Idempotency-TTL": "1m"}, "'X-Idempotency-TTL' is a proxy header"),
        ({"Connection": "close"}, "'Connection' is hop-by-hop or set by the sidecar"),
        ({"Transfer-Encoding": "chunked"}, "'Transfer-Encoding' is hop-by-hop"),
        ({"Host": "evil.example"}, "'Host' is hop-by-hop or set by the sidecar"),
        ({"Content-Length": "3"}, "'Content-Length' is hop-by-hop or set by the sidecar"),
        ({"Bad Name": "v"}, "'Bad Name' is not a header name"),
        ({"Api-Version": 2}, "the value of 'Api-Version' must be a string"),
        ({"Api-Version": "1\r\nX-Evil: 1"}, "the value of 'Api-Version' must be printable ASCII"),
        ({"Api-Version": "été"}, "the value of 'Api-Version' must be printable ASCII"),
        ({"Api-Version": "1", "api-version": "2"}, "'api-version' is given twice"),
    ],
)
def test_endpoint_headers_that_could_not_be_sent_are_refused(
    headers: dict[str, object], message: str
) -> None:
    table = ok_table(endpoints=[{"url": "https://a.example", "headers": headers}])
    with pytest.raises(RouteError, match="route 'r': endpoint 1: headers: ") as caught:
        parse_route("r", table)
    assert message in str(caught.value)


def test_messages_hold_no_credentials_query_or_header_values() -> None:
    with pytest.raises(RouteError) as caught:
        parse_route("r", ok_table(endpoints=[{"url": "https://user:hunter2@a.example/v1"}]))
    assert "must not hold credentials" in str(caught.value)
    assert "hunter2" not in str(caught.value)

    with pytest.raises(RouteError) as caught:
        parse_route("r", ok_table(endpoints=[{"url": "ftp://a.example/x?api_key=sk_live_1"}]))
    assert "'ftp://a.example/x'" in str(caught.value)
    assert "sk_live_1" not in str(caught.value)

    with pytest.raises(RouteError) as caught:
        parse_route(
            "r", ok_table(endpoints=[{"url": "https://a", "headers": {"Auth": "sk_2\nX: 1"}}])
        )
    assert "'Auth' must be printable ASCII" in str(caught.value)
    assert "sk_2" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[routes.a\n", "not valid TOML: "),
        ('[routes.a]\nendpoints = [{ url = "https://a" }]\nendpoints = []\n', "(at line 3"),
        (
            'version = 1\n[routes.a]\nendpoints = [{ url = "https://a" }]\n',
            "unknown top-level key 'version'",
        ),
        ("routes = 1\n", "routes: must be tables"),
        ('[routes]\na = "https://a"\n', "route 'a': must be a table of settings"),
        (
            '[routes.ok]\nendpoints = [{ url = "https://a" }]\n[routes.bad]\nendpoints = []\n',
            "route 'bad'",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(RouteError) as caught:
        routes_from_toml(text)
    assert message in str(caught.value)


def test_an_empty_file_holds_no_routes() -> None:
    assert routes_from_toml("") == []
    assert routes_to_toml([]) == ""


def test_export_imports_back_equal_and_exports_byte_for_byte() -> None:
    imported = routes_from_toml(FULL)

    exported = routes_to_toml(imported)

    assert routes_from_toml(exported) == imported
    assert routes_to_toml(routes_from_toml(exported)) == exported
    # Only what differs from the defaults is written; retry stays a number.
    assert "retry = 2\n" in exported
    assert "pci_guard = false" in exported
    assert exported.count("pci_guard") == 1
    assert "race_writes = true" in exported
    assert exported.count("race_writes") == 1


def test_routes_given_twice_are_not_exported() -> None:
    route = parse_route("r", ok_table())
    with pytest.raises(RouteError, match="route 'r': given twice"):
        routes_to_toml([route, route])


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5.0, "5s"),
        (0.25, "250ms"),
        (1.5, "1500ms"),
        (90.0, "90s"),
        (120.0, "2m"),
        (7200.0, "2h"),
        (86400.0, "1d"),
        (0.0015, "0.0015s"),
        (1e-05, "0.00001s"),
    ],
)
def test_durations_are_written_in_a_form_that_reads_back_exactly(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_any_timeout_reads_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_the_stored_form_round_trips() -> None:
    for route in routes_from_toml(FULL):
        assert routes.decode(routes.encode(route)) == route


def test_flags_make_the_table_parse_route_reads() -> None:
    table = table_from_flags(
        ["https://a.example", "https://b.example"],
        strategy="race",
        retry=1,
        timeout="2s",
        breaker_threshold=3,
        pci_guard=False,
        race_writes=True,
    )
    route = parse_route("r", table)
    assert [e.url for e in route.endpoints] == ["https://a.example", "https://b.example"]
    assert route.defaults.headers == (
        ("X-Retry-Count", "1"),
        ("X-Timeout", "2s"),
        ("X-Circuit-Breaker", "on; threshold=3"),
    )
    assert (route.strategy, route.pci_guard, route.race_writes) == ("race", False, True)
    assert table_from_flags(["https://a"], circuit_breaker=True)["circuit_breaker"] == "on"


def test_endpoint_secrets_pair_with_endpoints_by_position() -> None:
    table = table_from_flags(
        ["https://a.example", "https://b.example", "https://c.example"],
        endpoint_secrets=["-", "b-key"],
    )
    route = parse_route("r", table)
    assert [e.secret for e in route.endpoints] == [None, "b-key", None]
    with pytest.raises(RouteError, match="2 endpoint secrets for 1 endpoints"):
        table_from_flags(["https://a.example"], endpoint_secrets=["a", "b"])
    with pytest.raises(RouteError, match="endpoint 1: secret: must be the name of a secret"):
        parse_route("r", {"endpoints": [{"url": "https://a.example", "secret": "no spaces"}]})
    assert "circuit_breaker" not in table_from_flags(["https://a"])


# -- property: any valid route survives export and import ------------------------------

_names = st.from_regex(routes.NAME_PATTERN, fullmatch=True)
_header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True).filter(
    lambda n: (
        not n.lower().startswith("x-")
        and n.lower() not in {"connection", "te", "trailer", "upgrade", "host", "keep-alive"}
    )
)
_header_values = st.text(
    st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20
)
_endpoints = st.builds(
    lambda host, path, headers, timeout, secret: {
        "url": f"https://{host}.example{path}",
        **({"headers": headers} if headers else {}),
        **({"timeout": timeout} if timeout else {}),
        **({"secret": secret} if secret else {}),
    },
    st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True),
    st.sampled_from(["", "/", "/v1", "/v1/chat?x=1"]),
    st.dictionaries(
        _header_names,
        _header_values,
        max_size=3,
        dict_class=dict,
    ).filter(lambda h: len({n.lower() for n in h}) == len(h)),
    st.one_of(
        st.none(),
        st.sampled_from(["5s", "250ms", "1.5s", "0.001s", "2m", "1h", "1500", "90s", "3.25s"]),
    ),
    st.one_of(st.none(), _names),
)
_defaults = st.fixed_dictionaries(
    {},
    optional={
        "retry": st.one_of(st.integers(0, 10), st.integers(0, 10).map(str)),
        "retry_delay": st.sampled_from(["200ms", "1s", "0"]),
        "retry_on": st.sampled_from(["5xx", "429, reset", "gateway-error,409"]),
        "timeout": st.sampled_from(["5s", "30s", "1m"]),
        "deadline": st.sampled_from(["10s", "2m"]),
        "smart_cache": st.sampled_from(["5m", "1h; serve-fresh", "off"]),
        "circuit_breaker": st.one_of(
            st.booleans(), st.sampled_from(["on", "on; threshold=3; cooldown=10s"])
        ),
        "secret": _names,
        "pci_guard": st.booleans(),
    },
)


@st.composite
def route_tables(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    table: dict[str, Any] = draw(_defaults)
    table["strategy"] = draw(st.sampled_from(routes.STRATEGIES))
    if table["strategy"] == "race":
        table["race_writes"] = draw(st.booleans())
    table["endpoints"] = draw(st.lists(_endpoints, min_size=1, max_size=4))
    return draw(_names), table


@settings(max_examples=40, deadline=None)
@given(st.lists(route_tables(), max_size=4, unique_by=lambda pair: pair[0]))
def test_any_valid_route_round_trips_through_toml(pairs: list[tuple[str, dict[str, Any]]]) -> None:
    parsed = [parse_route(name, table) for name, table in pairs]

    exported = routes_to_toml(parsed)

    assert routes_from_toml(exported) == parsed
    assert routes_to_toml(routes_from_toml(exported)) == exported
    assert [routes.decode(routes.encode(r)) for r in parsed] == parsed
