"""Request records (SPEC §8): what is kept for replay, and what never is."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence

import orjson
import pytest

from sidecar.errors import BadHeader
from sidecar.exchange import Exchange
from sidecar.observability.observe import Outcome
from sidecar.observability.recorder import (
    RECORD_BODY_MAX,
    Recorder,
    RequestRecord,
    build_record,
    decode,
    encode,
    is_credential_header,
    is_credential_param,
)
from sidecar.policy import parse_policy
from sidecar.routing.routes import Endpoint, Route
from sidecar.store.memory import MemoryStore
from tests.support.clock import FakeClock

CARD = b"4111 1111 1111 1111"


def exchange(
    headers: Sequence[tuple[str, str]] = (),
    *,
    method: str = "POST",
    path: str = "/v1/charges",
    query: str = "",
    body: bytes = b'{"amount":100}',
) -> Exchange:
    """An exchange as the edge builds it: lower-case headers, the policy parsed."""
    lowered = [(name.lower(), value) for name, value in headers]
    policy = parse_policy(dict(lowered), 30.0)
    return Exchange(method, path, query, lowered, body, policy, "rid-1")


def outcome(ex: Exchange | None, *, error: str | None = None, status: int = 200) -> Outcome:
    return Outcome(
        request_id="rid-1",
        time=1_700_000_000.5,
        method=ex.method if ex else "POST",
        route=None,
        host="api.test",
        status=status,
        attempts=2,
        rescue="retry",
        latency=0.1,
        error=error,
        client_id="local",
        exchange=ex,
    )


def record(ex: Exchange, record_bodies: bool = False) -> RequestRecord:
    made = build_record(outcome(ex), record_bodies)
    assert made is not None
    return made


TARGET = ("X-Target-URL", "https://api.test/base")


# --- credentials ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "X-MirApi-Key",
        "X-Proxy-Master-Key",
        "X-Identity-Key",
        "X-Api-Key",
        "Api-Key",
        "X-Goog-Api-Key",
        "X-Amz-Security-Token",
        "X-CSRF-Token",
        "X-Client-Secret",
        "X-Db-Password",
        "X-Auth-User",
        "X-Session-Id",
        "Webhook-Signature",
        "X-Idempotency-Key-Secret",
    ],
)
def test_credential_headers_are_recognised(name: str) -> None:
    assert is_credential_header(name)


@pytest.mark.parametrize(
    "name",
    [
        "Idempotency-Key",
        "X-Proxy-Idempotency-Key",
        "X-Proxy-Secret",
        "Content-Type",
        "Accept",
        "Stripe-Version",
        "X-Retry-Count",
        "X-Smart-Cache",
        "X-Proxy-Record",
    ],
)
def test_other_headers_are_not_credentials(name: str) -> None:
    assert not is_credential_header(name)


@pytest.mark.parametrize("name", ["api_key", "access_token", "key", "sig", "client%5Fsecret"])
def test_credential_query_parameters_are_recognised(name: str) -> None:
    assert is_credential_param(name)


def test_credentials_are_left_out_and_named() -> None:
    made = record(
        exchange(
            [
                TARGET,
                ("Authorization", "Bearer sk_live_abc"),
                ("X-MirApi-Key", "mk_1_zzz"),
                ("Cookie", "s=1"),
                ("X-Custom-Token", "t0k"),
                ("Idempotency-Key", "idem-1"),
                ("X-Proxy-Idempotency-Key", "idem-2"),
                ("Content-Type", "application/json"),
                ("X-Retry-Count", "3"),
            ]
        )
    )
    assert made.headers == (
        ("idempotency-key", "idem-1"),
        ("x-proxy-idempotency-key", "idem-2"),
        ("content-type", "application/json"),
        ("x-retry-count", "3"),
    )
    assert made.withheld == (
        "header:authorization",
        "header:x-mirapi-key",
        "header:cookie",
        "header:x-custom-token",
        "body",
    )
    stored = encode(made)
    for value in (b"sk_live_abc", b"mk_1_zzz", b"s=1", b"t0k"):
        assert value not in stored


def test_framing_and_addressing_headers_are_not_kept() -> None:
    made = record(
        exchange(
            [
                TARGET,
                ("Host", "127.0.0.1:8742"),
                ("Content-Length", "14"),
                ("Connection", "keep-alive"),
                ("X-Request-ID", "rid-1"),
                ("Accept", "*/*"),
            ]
        )
    )
    assert made.headers == (("accept", "*/*"),)


# --- body and query ---------------------------------------------------------------


def test_recording_off_keeps_neither_body_nor_query() -> None:
    made = record(exchange([TARGET], query="customer=cus_1&limit=3"))
    assert made.body is None
    assert made.url == "https://api.test/base/v1/charges"
    assert made.withheld == ("query", "body")
    assert b"cus_1" not in encode(made)


def test_recording_on_by_config_keeps_body_and_query() -> None:
    made = record(exchange([TARGET], query="customer=cus_1&limit=3"), record_bodies=True)
    assert made.body == b'{"amount":100}'
    assert made.url == "https://api.test/base/v1/charges?customer=cus_1&limit=3"
    assert made.withheld == ()


@pytest.mark.parametrize(
    ("value", "config", "kept"),
    [("on", False, True), ("off", True, False), ("ON", False, True)],
)
def test_x_proxy_record_overrides_the_config(value: str, config: bool, kept: bool) -> None:
    made = record(exchange([TARGET, ("X-Proxy-Record", value)]), record_bodies=config)
    assert (made.body is not None) is kept
    assert ("x-proxy-record", value) in made.headers


def test_a_bad_x_proxy_record_is_refused_before_anything_is_recorded() -> None:
    with pytest.raises(BadHeader, match="X-Proxy-Record"):
        exchange([TARGET, ("X-Proxy-Record", "maybe")])


def test_an_empty_body_is_not_called_withheld() -> None:
    made = record(exchange([TARGET], method="GET", body=b""))
    assert made.body is None and made.withheld == ()
    assert record(exchange([TARGET], body=b""), record_bodies=True).body == b""


def test_credential_query_parameters_are_cut_out_raw() -> None:
    made = record(
        exchange([TARGET], method="GET", query="a=1+2&api_key=SEKRIT&b=%2F&access_token=X"),
        record_bodies=True,
    )
    assert made.url == "https://api.test/base/v1/charges?a=1+2&b=%2F"
    assert made.withheld == ("param:api_key", "param:access_token")
    assert b"SEKRIT" not in encode(made)


def test_userinfo_in_the_target_is_not_kept() -> None:
    made = record(exchange([("X-Target-URL", "https://bob:hunter2@api.test/x")]))
    assert made.url == "https://api.test/x/v1/charges"
    assert "userinfo" in made.withheld
    assert b"hunter2" not in encode(made)


def test_a_large_body_is_not_kept() -> None:
    made = record(exchange([TARGET], body=b"x" * (RECORD_BODY_MAX + 1)), record_bodies=True)
    assert made.body is None and made.withheld == ("body_too_large",)


def test_a_card_number_is_never_kept_even_when_recording() -> None:
    # Only reachable through a route with the PCI guard off; kept out anyway.
    made = record(exchange([TARGET], body=b"card=" + CARD, query="n=4111111111111111"), True)
    assert made.body is None
    assert made.withheld == ("card_number",)
    assert b"4111" not in encode(made)


# --- card numbers outside the body are masked (issue 14) ------------------------

PLAIN = "4111111111111111"
#: Every way the card is spelt below, to search the stored bytes for.
CARD_FORMS = [PLAIN, "4111 1111 1111 1111", "4111-1111-1111-1111", "111111111111"]


def assert_no_card(made: RequestRecord) -> bytes:
    """The stored bytes of `made`, which hold no card number in any spelling."""
    data = encode(made)
    for form in CARD_FORMS:
        assert form.encode() not in data, form
    return data


def test_a_card_in_an_ordinary_header_is_masked_but_for_its_last_four_digits() -> None:
    headers = [
        TARGET,
        ("X-Card", PLAIN),
        ("X-Note", "pay with 4111 1111 1111 1111 today"),
        ("Referer", "https://shop.test/pay?pan=4111+1111+1111+1111"),
        ("X-Card-Number", "6011000000000000001"),  # 19 digits: the name is the label
        ("X-Channel", "658377835337406812"),  # a snowflake id: kept as sent
    ]
    made = record(exchange(headers))
    assert made.headers == (
        ("x-card", "************1111"),
        ("x-note", "pay with **** **** **** 1111 today"),
        ("referer", "https://shop.test/pay?pan=****+****+****+1111"),
        ("x-card-number", "***************0001"),
        ("x-channel", "658377835337406812"),
    )
    assert_no_card(made)
    assert b"6011000000000000001" not in encode(made)


def test_a_card_in_the_path_is_masked_in_the_url_in_every_mode() -> None:
    # The guard refuses these, but a request refused before it (a rate
    # limit, an unknown route) or sent through a route with the guard off
    # is still recorded.
    target = record(exchange([TARGET], path=f"/v1/cards/{PLAIN}/charge"))
    assert target.url == "https://api.test/base/v1/cards/************1111/charge"
    route = record(exchange([("X-Route-Key", "pay")], path="/v1/cards/4111%201111%201111%201111"))
    assert route.url == "/v1/cards/****%20****%20****%201111"
    path_mode = record(exchange(path=f"/r/{PLAIN}/v1/x"))
    assert (path_mode.route, path_mode.url) == ("************1111", "/v1/x")
    for made in (target, route, path_mode):
        assert_no_card(made)


def test_a_card_in_the_target_url_is_masked() -> None:
    made = record(exchange([("X-Target-URL", f"https://api.test/cards/{PLAIN}")], path="/"))
    assert made.url == "https://api.test/cards/************1111"


def test_a_card_in_a_request_id_or_a_withheld_header_name_is_masked() -> None:
    made = build_record(
        dataclasses.replace(
            outcome(exchange([TARGET, (f"X-Api-Key-{PLAIN}", "k")])), request_id=PLAIN
        ),
        False,
    )
    assert made is not None
    assert made.request_id == "************1111"
    assert made.withheld == ("header:x-api-key-************1111", "body")
    assert_no_card(made)


def test_a_card_in_the_path_does_not_withhold_the_body() -> None:
    made = record(exchange([TARGET], path=f"/v1/cards/{PLAIN}", body=b'{"n":1}'), True)
    assert (made.body, made.withheld) == (b'{"n":1}', ())


def test_headers_without_a_card_are_kept_as_sent() -> None:
    headers = [TARGET, ("Accept", "a/b;q=0.9,+x"), ("X-Ts", "1700000000123"), ("X-Q", "%41")]
    made = record(exchange(headers))
    assert made.headers == (("accept", "a/b;q=0.9,+x"), ("x-ts", "1700000000123"), ("x-q", "%41"))


# --- where it went ----------------------------------------------------------------


def test_target_mode_url_is_the_url_as_sent() -> None:
    made = record(
        exchange([("X-Target-URL", "https://api.test/base?v=2")], query="a=1"), record_bodies=True
    )
    assert (made.route, made.url) == (None, "https://api.test/base/v1/charges?v=2&a=1")


def test_route_by_header_keeps_name_and_path() -> None:
    made = record(exchange([("X-Route-Key", "pay")], query="a=1"), record_bodies=True)
    assert (made.route, made.url) == ("pay", "/v1/charges?a=1")
    assert made.headers == ()


def test_route_by_path_mode_before_and_after_routing() -> None:
    before = exchange(path="/r/pay/v1/charges", query="a=1")
    assert (record(before, True).route, record(before, True).url) == ("pay", "/v1/charges?a=1")
    after = exchange(path="/v1/charges", query="a=1")
    after.route = Route("pay", (Endpoint("https://api.test"),))
    assert (record(after, True).route, record(after, True).url) == ("pay", "/v1/charges?a=1")


def test_no_target_keeps_the_path() -> None:
    made = record(exchange([]))
    assert (made.route, made.url) == (None, "/v1/charges")


def test_status_rescue_time_and_method_come_from_the_outcome() -> None:
    made = record(exchange([TARGET]))
    assert (made.request_id, made.time, made.method, made.status, made.rescue) == (
        "rid-1",
        1_700_000_000.5,
        "POST",
        200,
        "retry",
    )


# --- never recorded ---------------------------------------------------------------


def test_pci_blocked_and_unparsed_requests_are_not_recorded() -> None:
    blocked = exchange([TARGET, ("X-Proxy-Record", "on")], body=CARD)
    assert build_record(outcome(blocked, error="pci_card_number", status=400), True) is None
    assert build_record(outcome(None, error="unauthorized", status=401), True) is None
    # Other refusals are recorded: they may be what the user wants to replay.
    assert build_record(outcome(exchange([]), error="no_target", status=400), True) is not None


# --- encoding ---------------------------------------------------------------------


def test_encode_decode_round_trip_with_binary_body() -> None:
    made = record(exchange([TARGET, ("Accept", "a/b")], body=bytes(range(256))), True)
    data = encode(made)
    assert decode(data) == made
    assert orjson.loads(data)["body"] == base64.b64encode(bytes(range(256))).decode()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"nope", "not JSON"),
        (b"[]", "object"),
        (b'{"v": 99}', "version"),
        (b'{"v": 1, "headers": [["a"]], "withheld": []}', "'headers'"),
        (b'{"v": 1, "headers": [], "body": "***", "withheld": []}', "'body'"),
        (b'{"v": 1, "headers": [], "withheld": [], "time": 1, "status": "200"}', "'status'"),
    ],
)
def test_decode_names_what_is_wrong(data: bytes, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        decode(data)


# --- the observer -----------------------------------------------------------------


class FailingStore:
    async def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None:
        raise RuntimeError("down")


async def test_recorder_writes_to_the_store_in_batches() -> None:
    store = MemoryStore(FakeClock().clock())
    recorder = Recorder(store, record_bodies=False)
    await recorder.start()
    recorder.observe(outcome(exchange([TARGET, ("X-Proxy-Record", "on")])))
    blocked = exchange([TARGET, ("X-Proxy-Record", "on")], body=CARD)
    pci = outcome(blocked, error="pci_card_number", status=400)
    recorder.observe(dataclasses.replace(pci, request_id="rid-pci"))
    # Nothing awaits the store on the request path.
    assert await store.request_get("rid-1") is None
    await recorder.stop()
    stored = await store.request_get("rid-1")
    assert stored is not None
    assert decode(stored).body == b'{"amount":100}'
    assert await store.request_get("rid-pci") is None


async def test_recorder_never_raises() -> None:
    recorder = Recorder(FailingStore(), record_bodies=True)
    broken = exchange([TARGET])
    broken.headers = None  # type: ignore[assignment]
    recorder.observe(outcome(broken))  # building fails: logged, not raised
    recorder.observe(outcome(exchange([TARGET])))
    await recorder.stop()  # the store fails: logged, not raised
