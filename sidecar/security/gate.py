"""Who may use the sidecar: the checks at its door, before a body is read
(SPEC §1, §2 and §3).

`read_request` is where every request enters, proxied or control, and the
one place its request line and header bytes are read (SPEC §2, "Bad header
values"):

- The method and each header name must be a token (`400 bad_request`).
- The request-target must be a path starting with `/` (origin form) of
  visible ASCII and no `#`: `*`, an absolute URL, `@host:port/...` or a bare
  `path` get `400 bad_request`. The target is only ever appended to a URL
  whose host was named by a header or a route, so it can never change which
  host is called.
- Header values are read as UTF-8 (ASCII is UTF-8). Bytes that are not
  (latin-1 obs-text such as `caf\xe9`) and control characters other than
  TAB get `400 bad_header` naming the header: a value is forwarded byte for
  byte or not at all, and the HTTP client upstream writes UTF-8. The
  sidecar's own headers must be ASCII besides (`sidecar.policy`).
- `X-Request-ID` is echoed only when it is a printable ASCII token, so an
  answer never carries it mangled; the policy refuses any other value.

Then `Gate.admit`, in this order, each refusal naming what is wrong and never
a credential:

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

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sidecar import bounded
from sidecar.errors import BadHeader, BadRequest, BadRequestFraming, HostNotAllowed, Unauthorized
from sidecar.exchange import Exchange, Headers, new_request_id
from sidecar.policy import is_token, parse_policy
from sidecar.security import client_keys
from sidecar.security.client_keys import ClientKey
from sidecar.security.pci import mask_text

LOCAL_CLIENT = "local"
KEY_HEADER = client_keys.HEADER.lower()

#: RFC 9110 §5.6.2: a method and a header name are tokens.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Bytes no header value may hold: controls other than TAB (RFC 9110 §5.5).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: Origin form (RFC 9112 §3.2.1): '/' then visible ASCII; a '#' never travels.
_ORIGIN_PATH = re.compile(rb"/[\x21\x22\x24-\x7e]*")
_QUERY = re.compile(rb"[\x21\x22\x24-\x7e]*")
#: What a path decoded by the server is quoted back with when it gives no raw_path.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"


@dataclass(frozen=True, slots=True)
class Inbound:
    """A request's line and headers as the door read them: checked and decoded once."""

    method: str
    #: The path as received (percent-encoding kept), starting with '/'.
    path: str
    #: The raw query string, without the leading '?'.
    query: str
    #: Lower-case names in arrival order, values decoded as UTF-8.
    headers: Headers
    #: The first value of each header, by lower-case name.
    first: dict[str, str]
    #: The client's X-Request-ID when it may be echoed, else a new one.
    request_id: str

    def exchange(
        self,
        body: bytes,
        default_timeout: float,
        *,
        client_id: str = LOCAL_CLIENT,
        client_address: str = "",
        started: float | None = None,
        on_attempt: Callable[[str, str, float], None] | None = None,
    ) -> Exchange:
        """The one way from a request to an `Exchange`: its headers parsed into
        the policy (BadHeader names the first bad one), its facts attached.

        The sidecar, `mirapi curl` and a job's runs all come through here, so
        a request means the same thing whichever door it took.
        """
        exchange = Exchange(
            method=self.method,
            path=self.path,
            query=self.query,
            headers=self.headers,
            body=body,
            policy=parse_policy(self.first, default_timeout),
            request_id=self.request_id,
            client_id=client_id,
            client_address=client_address,
            on_attempt=on_attempt,
        )
        if started is not None:
            exchange.started = started
        return exchange


def inbound(
    method: str, path: str, query: str, headers: Headers, request_id: str | None = None
) -> Inbound:
    """An Inbound from parts already read (a stored job, `mirapi curl`'s decoded
    headers); the request id is `request_id`, else the client's, else a new one."""
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name, value)
    return Inbound(method, path, query, headers, first, request_id or request_id_of(first))


def read_request(scope: Mapping[str, Any]) -> Inbound:
    """The request line and headers of an ASGI `scope`; raises BadRequest or BadHeader."""
    method = scope["method"]
    if not (method.isascii() and _TOKEN.fullmatch(method.encode())):
        raise BadRequest("the method is not an HTTP token")
    raw_path = scope.get("raw_path")
    if raw_path is None:
        raw_path = quote(scope["path"], safe=_PATH_SAFE).encode()
    query = scope.get("query_string", b"")
    if not _ORIGIN_PATH.fullmatch(raw_path) or not _QUERY.fullmatch(query):
        raise BadRequest(
            "the request-target must be a path starting with '/' (not '*', an absolute"
            " URL or '@host'), of visible ASCII without '#': it never says which host"
            " is called; send X-Target-URL, X-Route-Key or use /r/NAME/"
        )
    headers, first = read_headers(scope["headers"])
    return Inbound(
        method=method,
        path=raw_path.decode("ascii"),
        query=query.decode("ascii"),
        headers=headers,
        first=first,
        request_id=request_id_of(first),
    )


def read_headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[Headers, dict[str, str]]:
    """Headers in order, and a first-value-wins map; raises BadRequest or BadHeader."""
    headers: Headers = []
    first: dict[str, str] = {}
    for name_bytes, value_bytes in raw:
        name = _header_name(name_bytes)
        if name is None:
            raise BadRequest("a header name is not an HTTP token")
        value = _header_value(name, value_bytes)
        headers.append((name, value))
        first.setdefault(name, value)
    return headers, first


@bounded.memoize(bounded.text_cost(2))
def _header_name(raw: bytes) -> str | None:
    # Clients send the same few names over and over: checked once each.
    return raw.decode("ascii").lower() if _TOKEN.fullmatch(raw) else None


def _header_value(name: str, raw: bytes) -> str:
    if _CONTROL.search(raw):
        raise BadHeader(name, "holds a control character (only TAB is allowed in a value)")
    if raw.isascii():
        return raw.decode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadHeader(
            name,
            "is not UTF-8 (latin-1 bytes?): values are forwarded byte for byte, and"
            " only UTF-8 can be; send the text as UTF-8 or percent-encoded",
        ) from None


def request_id_of(first: Mapping[str, str]) -> str:
    """The client's X-Request-ID when it is a printable ASCII token, else a new id.

    Any other value is refused by the policy (`400 bad_header`); the answer
    saying so carries a new id rather than echo what it refused.
    """
    given = first.get("x-request-id")
    if given is not None and is_token(given):
        # The id goes into records, events and logs: a card number in it is
        # masked there (SPEC §2.2), and so in the echo too.
        return mask_text(given)
    return new_request_id()


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
# answers rather than parse an address per request (bounded by bytes).
@bounded.memoize(bounded.text_cost(1))
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
        # Host is the client's to choose: kept within bytes, not only a count.
        self._hosts: bounded.ByteCache[str, bool] = bounded.ByteCache(
            bounded.budget(), bounded.text_cost(1)
        )

    def _host_allowed(self, host: str | None) -> bool:
        if host is None:
            return host_allowed(None, self._server_names)
        allowed = self._hosts.get(host)
        if allowed is None:
            allowed = host_allowed(host, self._server_names)
            self._hosts.put(host, allowed)
        return allowed

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
