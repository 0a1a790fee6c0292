"""Who may use the sidecar: the checks at its door, before a body is read
(SPEC §2.1 and §3).

In this order, each refusal naming what is wrong and never a credential:

1. `Host` must be a loopback name (`localhost`, `*.localhost`), an address
   literal or a configured `server_names` entry, else `403 host_not_allowed`.
   DNS rebinding needs a name the attacker controls, so an address cannot be
   one (Transmission and Jupyter draw the same line). A unix socket has no
   such attacker (a browser cannot reach it), so it skips this check.
2. `Content-Length` together with `Transfer-Encoding` is refused
   (`400 bad_request`, connection closed): the two frame a body differently
   and are the stuff of request smuggling; we never forward such a request.
3. Client keys: once any exists, `X-MirApi-Key` must be one of them (`401`);
   while none exists only loopback clients (and unix-socket ones) are served.

`admit` returns the client id the pipeline scopes per-client state with
(cache and idempotency keys): the key's id, or "local" without keys.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sidecar import client_keys
from sidecar.client_keys import ClientKey
from sidecar.errors import BadRequestFraming, HostNotAllowed, Unauthorized

LOCAL_CLIENT = "local"
KEY_HEADER = client_keys.HEADER.lower()


def host_name(host: str) -> str:
    """The name or address of a Host header, without port, brackets or a final dot."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower() if "]" in host else host.lower()
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".").lower()


def is_address(name: str) -> bool:
    """True for an IPv4 or IPv6 literal."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(host: str | None, server_names: Iterable[str]) -> bool:
    """Whether a request with this `Host` header may be served (no header: an HTTP/1.0 client)."""
    if host is None:
        return True
    name = host_name(host)
    if name == "localhost" or name.endswith(".localhost") or is_address(name):
        return True
    return any(_matches(name, allowed) for allowed in server_names)


def _matches(name: str, allowed: str) -> bool:
    allowed = allowed.rstrip(".").lower()
    if allowed.startswith("*."):
        return name.endswith(allowed[1:]) and len(name) > len(allowed) - 1
    return name == allowed


def is_loopback_client(client: Any) -> bool:
    """Whether the ASGI scope's `client` is this machine (a unix socket's has no address)."""
    if not client or not client[0]:
        return True
    return _is_loopback_address(str(client[0]))


# Every request asks about the same few addresses and hosts: remember the
# answers rather than parse an address per request (bounded).
@functools.lru_cache(maxsize=4096)
def _is_loopback_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False  # Hypercorn gives a unix socket's peer as a path or nothing
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class Gate:
    """The door checks for one sidecar; `keys` is the live snapshot of client keys."""

    def __init__(
        self,
        keys: Callable[[], Mapping[str, ClientKey]],
        server_names: Iterable[str] = (),
        *,
        check_host: bool = True,
    ) -> None:
        self._keys = keys
        self._server_names = tuple(server_names)
        self._check_host = check_host
        self._host_allowed = functools.lru_cache(maxsize=4096)(self._allows_host)

    def _allows_host(self, host: str | None) -> bool:
        return host_allowed(host, self._server_names)

    def admit(self, scope: Mapping[str, Any], first: Mapping[str, str], *, key: bool = True) -> str:
        """The client id of a request that may go on; raises the refusal otherwise.

        `first` holds the first value of each header, by lower-case name.
        `key` False (probes such as healthz) skips the client key check.
        """
        if self._check_host and not self._host_allowed(first.get("host")):
            raise HostNotAllowed(
                "the Host header names neither this machine nor a configured"
                " server_names entry (a guard against DNS rebinding)"
            )
        if "transfer-encoding" in first and "content-length" in first:
            raise BadRequestFraming(
                "Content-Length and Transfer-Encoding together are refused (request smuggling)"
            )
        if not key:
            return LOCAL_CLIENT
        return self.client_id(scope, first.get(KEY_HEADER))

    def client_id(self, scope: Mapping[str, Any], presented: str | None) -> str:
        """The id of the client key presented; raises Unauthorized when it does not admit."""
        keys = self._keys()
        if not keys:
            if not is_loopback_client(scope.get("client")):
                raise Unauthorized(
                    "no client keys exist, so only this machine may use the sidecar;"
                    " create one with `mirapi keys create` and send it in X-MirApi-Key"
                )
            return LOCAL_CLIENT
        if presented is None:
            raise Unauthorized("X-MirApi-Key is required: client keys are in use")
        found = client_keys.authenticate(presented, keys)
        if found is None:
            raise Unauthorized("X-MirApi-Key is not a valid client key (revoked, or mistyped)")
        return found.id
