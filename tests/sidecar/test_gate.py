"""The sidecar's door (sidecar/gate.py): Host, framing and client keys, unit by unit."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar import client_keys
from sidecar.errors import BadRequestFraming, HostNotAllowed, Unauthorized
from sidecar.gate import Gate, host_allowed, host_name, is_loopback_client

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
