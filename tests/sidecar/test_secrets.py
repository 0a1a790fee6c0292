"""Stored secrets: validation with clear messages, the stored form, host matching."""

from __future__ import annotations

import orjson
import pytest

from sidecar.security.secrets import (
    Secret,
    SecretError,
    check_value,
    decode,
    encode,
    for_host,
    parse_secret,
    target_host,
)

TOKEN = "mirapi:v1:" + "A" * 60


def secret(name: str = "stripe", host: str = "api.stripe.com", **more: str) -> Secret:
    return parse_secret(name, host, TOKEN, **more)


def test_defaults_are_a_bearer_authorization_header() -> None:
    made = secret()
    assert (made.header, made.format) == ("Authorization", "Bearer {}")
    assert made.header_for("sk_1") == ("authorization", "Bearer sk_1")
    custom = secret(header="X-Api-Key", format="{}")
    assert custom.header_for("k") == ("x-api-key", "k")
    # Only the one placeholder is replaced; other braces are literal.
    assert secret(format="Token {}}").header_for("{}") == ("authorization", "Token {}}")


def test_encode_decode_round_trip_and_the_token_stays_out_of_repr() -> None:
    made = secret(header="X-Api-Key", format="Key {}")
    assert decode("stripe", encode(made)) == made
    assert TOKEN not in repr(made)
    assert set(orjson.loads(encode(made))) == {"name", "host", "header", "format", "token"}


def test_a_record_stored_under_another_name_is_refused() -> None:
    with pytest.raises(ValueError, match="another name"):
        decode("openai", encode(secret()))


@pytest.mark.parametrize(
    "data",
    [b"[]", b"{}", b'{"name": "stripe", "host": "h", "token": "plain"}', b"not json"],
)
def test_a_record_that_is_not_a_secret_is_refused(data: bytes) -> None:
    with pytest.raises((ValueError, KeyError)):
        decode("stripe", data)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("API.Stripe.COM", "api.stripe.com"),
        (" api.stripe.com. ", "api.stripe.com"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("internal_svc.corp", "internal_svc.corp"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ],
)
def test_hosts_are_normalised(given: str, stored: str) -> None:
    assert secret(host=given).host == stored


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("https://api.stripe.com", "no scheme or path"),
        ("api.stripe.com/v1", "no scheme or path"),
        ("api.stripe.com:443", "no port"),
        ("", "not a hostname"),
        ("bücher.de", "xn--"),
        ("a..b", "not a hostname"),
        ("-bad.example", "not a hostname"),
    ],
)
def test_a_bad_host_is_refused_naming_the_flag(host: str, says: str) -> None:
    with pytest.raises(SecretError, match="--host") as raised:
        secret(host=host)
    assert says in raised.value.message


@pytest.mark.parametrize(
    "header",
    ["X-Proxy-Secret", "x-mirapi-key", "X-Identity-Key", "Connection", "Host", "Content-Length"],
)
def test_a_header_the_upstream_never_receives_is_refused(header: str) -> None:
    with pytest.raises(SecretError, match="never sent upstream"):
        secret(header=header)


@pytest.mark.parametrize("header", ["", "Bad Header", "Auth:", "Autho\u00efzation"])
def test_a_header_name_that_is_not_an_http_token_is_refused(header: str) -> None:
    with pytest.raises(SecretError, match="--header: not a valid"):
        secret(header=header)


@pytest.mark.parametrize("fmt", ["Bearer", "{} {}", "Bearer {}\r\nX-Evil: 1", "Bearer {0}"])
def test_a_format_needs_exactly_one_placeholder_and_printable_ascii(fmt: str) -> None:
    with pytest.raises(SecretError, match="--format"):
        secret(format=fmt)


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "é", "a/b"])
def test_names_follow_the_route_name_rule(name: str) -> None:
    with pytest.raises(SecretError, match="bad secret name"):
        secret(name=name)


def test_a_stored_value_must_be_a_token() -> None:
    with pytest.raises(SecretError, match="not a mirapi:v1: token"):
        parse_secret("stripe", "api.stripe.com", "sk_live_plain")


@pytest.mark.parametrize(
    "value", ["", "line\nbreak", "cr\rlf", "nul\x00", " lead", "trail\t", "caf\u00e9", "x" * 9000]
)
def test_a_value_that_cannot_go_into_a_header_is_refused_without_quoting_it(value: str) -> None:
    with pytest.raises(SecretError) as raised:
        check_value(value)
    if value.strip():
        assert value.strip() not in raised.value.message


def test_values_with_inner_spaces_and_symbols_are_fine() -> None:
    assert check_value("user:p@ss w0rd!~") == "user:p@ss w0rd!~"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://API.Stripe.com:8443/v1?x=1", "api.stripe.com"),
        ("https://user:pw@api.stripe.com./v1", "api.stripe.com"),
        ("http://[::1]:8080/", "::1"),
        ("http://127.0.0.1:9/", "127.0.0.1"),
        ("not a url", ""),
    ],
)
def test_target_host_is_the_hostname_as_secrets_name_it(url: str, host: str) -> None:
    assert target_host(url) == host


def test_for_host_takes_the_first_secret_by_name_and_only_exact_hosts() -> None:
    stored = {
        "zeta": secret("zeta"),
        "alpha": secret("alpha"),
        "other": secret("other", host="stripe.com"),
    }
    found = for_host(stored, "api.stripe.com")
    assert found is not None and found.name == "alpha"
    assert for_host(stored, "files.stripe.com") is None
    found = for_host(stored, "stripe.com")
    assert found is not None and found.name == "other"
