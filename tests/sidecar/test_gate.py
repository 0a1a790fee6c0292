"""The sidecar's door (sidecar/security/gate.py): the request line, header bytes, Host, framing and
client keys, unit by unit."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.errors import BadHeader, BadRequest, BadRequestFraming, HostNotAllowed, Unauthorized
from sidecar.security import client_keys
from sidecar.security.gate import (
    Gate,
    host_allowed,
    host_name,
    is_loopback_client,
    read_headers,
    read_request,
)

LOOPBACK: dict[str, Any] = {"client": ("127.0.0.1", 50000)}
REMOTE: dict[str, Any] = {"client": ("10.1.2.3", 50000)}


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8742", "localhost"),
        ("LOCALHOST.", "localhost"),
        ("[::1]:8742", "::1"),
        ("::1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("api.internal:80", "api.internal"),
    ],
)
def test_host_name_drops_port_brackets_and_final_dot(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    "host",
    [None, "localhost", "localhost:8742", "app.localhost", "127.0.0.1:8742", "[::1]:1", "10.0.0.7"],
)
def test_loopback_names_and_addresses_are_allowed(host: str | None) -> None:
    assert host_allowed(host, ())


@pytest.mark.parametrize(
    "host", ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "sidecarx", ""]
)
def test_other_names_are_refused(host: str) -> None:
    assert not host_allowed(host, ("sidecar",))


def test_configured_server_names_are_allowed_exactly_or_by_wildcard() -> None:
    names = ("sidecar", "*.pods.internal")
    assert host_allowed("sidecar:8742", names)
    assert host_allowed("SIDECAR", names)
    assert host_allowed("a.pods.internal", names)
    assert not host_allowed("pods.internal", names)
    assert not host_allowed("a.pods.internal.evil", names)


@pytest.mark.parametrize(
    ("client", "loopback"),
    [
        (("127.0.0.1", 1), True),
        (("127.8.9.10", 1), True),
        (("::1", 1), True),
        (("::ffff:127.0.0.1", 1), True),
        (("10.0.0.1", 1), False),
        (("::ffff:10.0.0.1", 1), False),
        (None, True),  # a unix socket: this machine by definition
        (("", 0), True),
    ],
)
def test_loopback_clients(client: Any, loopback: bool) -> None:
    assert is_loopback_client(client) is loopback


def gate_with(*keys: client_keys.ClientKey, server_names: tuple[str, ...] = ()) -> Gate:
    table = {key.id: key for key in keys}
    return Gate(lambda: table, server_names)


def test_a_foreign_host_is_refused_before_anything_else() -> None:
    with pytest.raises(HostNotAllowed) as caught:
        gate_with().admit(LOOPBACK, {"host": "evil.example"})
    assert "server_names" in caught.value.message
    assert "evil.example" not in caught.value.message


def test_content_length_with_transfer_encoding_is_refused() -> None:
    headers = {"host": "localhost", "content-length": "5", "transfer-encoding": "chunked"}
    with pytest.raises(BadRequestFraming):
        gate_with().admit(LOOPBACK, headers)


def test_without_keys_only_loopback_clients_are_served() -> None:
    gate = gate_with()
    assert gate.admit(LOOPBACK, {"host": "localhost"}) == "local"
    with pytest.raises(Unauthorized) as caught:
        gate.admit(REMOTE, {"host": "10.0.0.9"})
    assert "mirapi keys create" in caught.value.message


def test_with_keys_every_client_needs_one() -> None:
    key, text = client_keys.new_key("app", now=1.0)
    _, other_text = client_keys.new_key("other", now=1.0)
    gate = gate_with(key)
    assert gate.admit(REMOTE, {"host": "10.0.0.9", "x-mirapi-key": text}) == key.id
    for presented in (None, other_text, text[:-1] + ("A" if text[-1] != "A" else "B"), "junk"):
        headers = {"host": "localhost"}
        if presented is not None:
            headers["x-mirapi-key"] = presented
        with pytest.raises(Unauthorized) as caught:
            gate.admit(LOOPBACK, headers)
        assert text not in caught.value.message


def test_probes_skip_the_key_but_not_the_host() -> None:
    key, _ = client_keys.new_key(None, now=1.0)
    gate = gate_with(key)
    assert gate.admit(LOOPBACK, {"host": "localhost"}, key=False) == "local"
    with pytest.raises(HostNotAllowed):
        gate.admit(LOOPBACK, {"host": "evil.example"}, key=False)


def test_a_unix_socket_sidecar_does_not_check_host() -> None:
    gate = Gate(dict, (), check_host=False)
    assert gate.admit({"client": None}, {"host": "anything"}) == "local"


def scope(
    target: bytes = b"/",
    headers: list[tuple[bytes, bytes]] | None = None,
    method: str = "GET",
    query: bytes = b"",
) -> dict[str, Any]:
    """An ASGI scope as Hypercorn hands one over."""
    return {
        "method": method,
        "path": target.decode("latin-1"),
        "raw_path": target,
        "query_string": query,
        "headers": headers or [(b"host", b"127.0.0.1:8742")],
    }


@pytest.mark.parametrize(
    "target",
    [
        b"*",  # OPTIONS *
        b"http://host/path",  # absolute form
        b"https://127.0.0.2:9/echo",
        b"echo",
        b"@127.0.0.2:9/echo",  # would be read as userinfo@host after the target URL
        b":9@127.0.0.2/echo",
        b"127.0.0.2:9",  # authority form (CONNECT)
        b"",
        b"/a#frag",
        b"/a b",
        b"/caf\xc3\xa9",
    ],
)
def test_a_request_target_that_is_no_origin_form_path_is_a_bad_request(target: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        read_request(scope(target))
    assert caught.value.code == "bad_request"
    assert "must be a path starting with '/'" in caught.value.message


@pytest.mark.parametrize("query", [b"a#b", b"a b", b"caf\xc3\xa9"])
def test_a_query_string_of_other_than_visible_ascii_is_a_bad_request(query: bytes) -> None:
    with pytest.raises(BadRequest):
        read_request(scope(b"/x", query=query))


def test_an_origin_form_path_is_kept_as_received() -> None:
    inbound = read_request(scope(b"//127.0.0.2/%40x", query=b"a=1&b=%20"))
    assert (inbound.method, inbound.path, inbound.query) == ("GET", "//127.0.0.2/%40x", "a=1&b=%20")


@pytest.mark.parametrize("method", ["GE T", "GET\r\n", "", "G\u00c9T"])
def test_a_method_that_is_no_token_is_a_bad_request(method: str) -> None:
    with pytest.raises(BadRequest):
        read_request(scope(method=method))


def test_header_values_are_read_as_utf8() -> None:
    headers, first = read_headers(
        [(b"User-Agent", "na\u00efve".encode()), (b"x-identity-key", "cl\u00e9".encode())]
    )
    assert headers == [("user-agent", "na\u00efve"), ("x-identity-key", "cl\u00e9")]
    assert first["user-agent"] == "na\u00efve"


def test_latin1_obs_text_is_refused_naming_the_header() -> None:
    with pytest.raises(BadHeader) as caught:
        read_headers([(b"accept-language", b"caf\xe9")])
    assert caught.value.code == "bad_header"
    assert caught.value.header == "accept-language"
    assert "UTF-8" in caught.value.reason


@pytest.mark.parametrize("value", [b"a\r\nx-injected: 1", b"a\x00b", b"a\x7f", b"\x1b[31m"])
def test_a_control_character_in_a_value_is_refused(value: bytes) -> None:
    with pytest.raises(BadHeader) as caught:
        read_headers([(b"x-custom", value)])
    assert caught.value.header == "x-custom"


def test_a_tab_inside_a_value_is_kept() -> None:
    assert read_headers([(b"x-custom", b"a\tb")])[0] == [("x-custom", "a\tb")]


@pytest.mark.parametrize("name", [b"", b"x custom", b"x:y", b"caf\xc3\xa9", b"a\r\nb"])
def test_a_header_name_that_is_no_token_is_a_bad_request(name: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        read_headers([(name, b"1")])
    assert caught.value.code == "bad_request"


@pytest.mark.parametrize(
    "given", ["r\u00e9q-1".encode(), b"", b"a" * 256, "r\u00c3\u00a9q".encode()]
)
def test_an_x_request_id_that_cannot_be_echoed_gets_a_new_one(given: bytes) -> None:
    inbound = read_request(scope(headers=[(b"x-request-id", given)]))
    assert inbound.request_id.isascii() and len(inbound.request_id) == 16
    assert read_request(scope(headers=[(b"x-request-id", b"req-7")])).request_id == "req-7"
