"""Request records for `mirapi replay` (SPEC §8): what a request was, minus its credentials.

The `Recorder` is an observer: for every proxied request it builds a
`RequestRecord` (method, where it went, the client's headers, status,
rescue, and the body when recording is on) and queues it in a
`BatchWriter`, which hands batches to `store.requests_put`. The store keeps
the newest `REQUESTS_MAX` by request id, so `mirapi replay ID` can read one
back and send it again with other headers.

What a record never holds:

- **Credentials.** A request header is left out when its lower-case name is
  one of `CREDENTIAL_HEADERS`, or contains one of `CREDENTIAL_WORDS`
  (`token`, `secret`, `password`, `key`, `auth`, `cookie`, `session`,
  `signature`, ...). Exceptions, because their values name something and
  grant nothing: a name ending in `idempotency-key` (`Idempotency-Key`,
  `X-Proxy-Idempotency-Key`; replaying with it gets the stored answer, as
  the client's own retry would) and `X-Proxy-Secret` (a stored secret's
  name, never its value). Over-matching is the safe side: a header left out
  is added back with `replay -H`, a leaked one cannot be taken back. Query
  parameters named by the same words (`api_key`, `access_token`, `sig`, ...)
  and a URL's `user:password@` are left out the same way. The record lists
  the *names* of what it left out (`withheld`), so replay can say which
  credentials to add; never a value.
- **The body and the query string, unless recording is on** for the request:
  `record_bodies = true` in the config, or `X-Proxy-Record: on` on the request
  (`off` turns it off for that request even when the config says on). A
  query is a GET's payload and, like a body, may hold personal data.
- **A card number.** A PCI-blocked request (`pci_card_number`) is never
  recorded at all; nor is one refused before it was parsed (no exchange:
  bad framing, unauthenticated). When recording is on for a request that
  passed with a card number in its body or query (a route with the PCI
  guard off, such as a card vault's), both are withheld as if recording
  were off. A card number anywhere else the record keeps (a header, the
  path or target URL, the route name, the request id) is masked: all its
  digits but the last four become `*`, as sent and URL-decoded
  (`sidecar.security.pci.mask_card_numbers`; a header is scanned as `name: value`,
  so its name is the label of a 17-19 digit number). The guard refuses a
  card in the path, so a masked path comes from a request refused before
  the guard ran (a rate limit, an unknown route) or a route with the guard
  off.
- A body over `RECORD_BODY_MAX` (1 MiB): a ring of a thousand records must
  not grow into gigabytes.

Headers that describe one connection or one request's framing (`Host`,
`Content-Length`, hop-by-hop ones) and `X-Request-ID` (the record's id; a
replay gets a new one) are not kept either. The addressing headers
(`X-Target-URL`, `X-Route-Key`) are folded into `url` and `route`:

- Target mode: `url` is the upstream URL as sent (the target joined with the
  request's path and query, SPEC §1), `route` None.
- Route mode (header or path mode): `route` is the name and `url` the path and
  query appended to its endpoints (`/v1/charges?limit=3`), which replay sends
  with `X-Route-Key`.

Records are JSON in the store (`encode` / `decode`), the body base64.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import orjson

from sidecar.observability.observe import BatchWriter, Outcome

if TYPE_CHECKING:
    from sidecar.exchange import Exchange

log = logging.getLogger("mirapi.recorder")

#: The record format; `decode` refuses others.
VERSION = 1
#: The largest body a record keeps; a larger one is withheld ("body_too_large").
RECORD_BODY_MAX = 1024 * 1024

#: Request headers that carry a credential, by exact lower-case name.
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-mirapi-key",
        "x-proxy-master-key",
        "x-identity-key",
        "x-api-key",
        "api-key",
    }
)
#: A header or query parameter whose lower-case name contains one of these is a credential.
CREDENTIAL_WORDS = (
    "token",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "key",
    "auth",
    "cookie",
    "session",
    "signature",
    "credential",
)
#: Query parameter names that are credentials without holding a word above.
CREDENTIAL_PARAMS = frozenset({"sig", "pwd", "pass"})
#: Headers a credential word would catch whose values grant nothing.
_NAMED_NOT_SECRET = frozenset({"x-proxy-secret"})

#: Not kept: one connection's or one request's framing, and what `url`,
#: `route` and `request_id` already hold.
_NOT_KEPT = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "x-request-id",
        "x-target-url",
        "x-route-key",
    }
)

#: `withheld` entries (with `header:NAME` and `param:NAME` for credentials).
WITHHELD_BODY = "body"
WITHHELD_BODY_TOO_LARGE = "body_too_large"
WITHHELD_CARD_NUMBER = "card_number"
WITHHELD_QUERY = "query"
WITHHELD_USERINFO = "userinfo"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One proxied request as kept for replay. Never holds a credential."""

    request_id: str
    #: Wall-clock seconds when the request arrived.
    time: float
    method: str
    #: Target mode: the upstream URL as sent. Route mode: the path and query.
    url: str
    #: The stored route the request named, or None (target mode).
    route: str | None
    #: The client's headers, lower-case names, credentials and framing left out.
    headers: tuple[tuple[str, str], ...]
    #: The body when recording was on (b"" for none); None when not recorded.
    body: bytes | None
    status: int
    rescue: str | None
    #: What was left out and replay cannot send back: `body`, `body_too_large`,
    #: `card_number`, `query`, `userinfo`, `header:NAME`, `param:NAME`.
    withheld: tuple[str, ...] = ()


@functools.lru_cache(maxsize=1024)
def is_credential_header(name: str) -> bool:
    """Whether header `name` may carry a credential (and so is never recorded)."""
    # Cached: every request asks again about the same few dozen names.
    lowered = name.lower()
    if lowered in CREDENTIAL_HEADERS:
        return True
    if lowered in _NAMED_NOT_SECRET:
        return False
    if lowered.endswith("idempotency-key"):
        lowered = lowered.removesuffix("idempotency-key")
    return any(word in lowered for word in CREDENTIAL_WORDS)


def is_credential_param(name: str) -> bool:
    """Whether query parameter `name` (raw, maybe %-encoded) may carry a credential."""
    lowered = unquote_plus(name).lower()
    return lowered in CREDENTIAL_PARAMS or any(word in lowered for word in CREDENTIAL_WORDS)


def wants_body(exchange: Exchange, record_bodies: bool) -> bool:
    """Whether recording is on for this request: `X-Proxy-Record` (parsed, so a
    bad value was already refused with 400), else the config."""
    record = exchange.policy.record
    return record_bodies if record is None else record


def keep_headers(headers: Sequence[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """The headers a record keeps, and the names of the credentials it left out."""
    kept: list[tuple[str, str]] = []
    dropped: list[str] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in _NOT_KEPT:
            continue
        if is_credential_header(lowered):
            if lowered not in dropped:
                dropped.append(lowered)
            continue
        kept.append((lowered, value))
    return kept, dropped


def keep_query(query: str, with_values: bool) -> tuple[str, list[str]]:
    """The query a record keeps and what it withheld.

    Recording off: none of it (`query`). On: all but credential parameters,
    whose pairs are cut out raw so the rest stays byte for byte as sent.
    """
    if not query:
        return "", []
    if not with_values:
        return "", [WITHHELD_QUERY]
    kept: list[str] = []
    withheld: list[str] = []
    for pair in query.split("&"):
        name = pair.partition("=")[0]
        if name and is_credential_param(name):
            note = f"param:{name}"
            if note not in withheld:
                withheld.append(note)
            continue
        kept.append(pair)
    return "&".join(kept), withheld


def address(exchange: Exchange) -> tuple[str | None, str, str]:
    """(route name or None, target URL without query or the path, the query).

    Worked out from the request itself, not from `exchange.targets`, so a
    request refused before routing (a reused idempotency key, say) gets the
    same address as one that went through.
    """
    from sidecar.stages.routing import join_target, split_path_mode

    if exchange.route is not None:
        return exchange.route.name, exchange.path, exchange.query
    if exchange.policy.route_key is not None:
        return exchange.policy.route_key, exchange.path, exchange.query
    path_mode = split_path_mode(exchange.path)
    if path_mode is not None:
        name, rest = path_mode
        return name, rest, exchange.query
    if exchange.policy.target_url is not None:
        joined = join_target(exchange.policy.target_url, exchange.path, exchange.query)
        base, _, query = joined.partition("?")
        return None, base, query
    # No target at all (`no_target`): only the path; replay needs --target.
    return None, exchange.path, exchange.query


def _without_userinfo(url: str) -> tuple[str, bool]:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, False
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host)), True


@functools.cache
def _pci() -> ModuleType:
    """`sidecar.security.pci`, imported at first use: `mirapi replay` reads records
    (`decode`) without building the scanner's tables, and a function-level
    import costs a request more than this cached call."""
    import sidecar.security.pci

    return sidecar.security.pci


def mask_header(name: str, value: str) -> tuple[str, str]:
    """(name, value) with card numbers masked, scanned as `name: value` (the name is a label)."""
    masked_name, _, masked_value = _pci().mask_text(f"{name}: {value}").partition(": ")
    return masked_name, masked_value


def masked(
    request_id: str, url: str, route: str | None, headers: list[tuple[str, str]], names: list[str]
) -> tuple[str, str, str | None, list[tuple[str, str]], list[str]]:
    """The record's text fields with every card number masked (see the module doc)."""
    pci = _pci()
    # One scan of them all first: a card outside the body is rare, and
    # masking field by field costs a scan each. A card in one field is
    # found in the joined text too (a newline ends a digit run, and a
    # label only grows).
    joined = "\n".join(chain((request_id, url, route or ""), chain.from_iterable(headers), names))
    if not pci.has_card_number(pci.text_bytes(joined)):
        return request_id, url, route, headers, names
    return (
        pci.mask_text(request_id),
        pci.mask_text(url),
        None if route is None else pci.mask_text(route),
        [mask_header(name, value) for name, value in headers],
        [pci.mask_text(name) for name in names],
    )


def build_record(outcome: Outcome, record_bodies: bool) -> RequestRecord | None:
    """The record of `outcome`, or None when it must not be recorded."""
    exchange = outcome.exchange
    if exchange is None or outcome.error == "pci_card_number":
        return None
    withheld: list[str] = []
    recording = wants_body(exchange, record_bodies)
    # The guard was off for this request (a route's choice): keep no card
    # number even so. `card_number` stands for the body and query both.
    card = False
    if recording:
        # Here, not at the top: `mirapi replay` reads records (`decode`) without
        # paying for the proxy's stages and their HTTP clients.
        from sidecar.stages.pci_guard import card_in_payload

        card = card_in_payload(exchange) is not None
    if card:
        recording = False
        withheld.append(WITHHELD_CARD_NUMBER)
    route, base, query = address(exchange)
    if route is None:
        base, had_userinfo = _without_userinfo(base)
        if had_userinfo:
            withheld.append(WITHHELD_USERINFO)
    kept_query, query_notes = keep_query(query, recording)
    if not card:
        withheld.extend(query_notes)
    url = f"{base}?{kept_query}" if kept_query else base
    headers, dropped = keep_headers(exchange.headers)
    request_id, url, route, headers, dropped = masked(
        outcome.request_id, url, route, headers, dropped
    )
    withheld.extend(f"header:{name}" for name in dropped)
    body: bytes | None = None
    if recording and len(exchange.body) <= RECORD_BODY_MAX:
        body = exchange.body
    elif recording:
        withheld.append(WITHHELD_BODY_TOO_LARGE)
    elif exchange.body and not card:
        withheld.append(WITHHELD_BODY)
    return RequestRecord(
        request_id=request_id,
        time=outcome.time,
        method=outcome.method,
        url=url,
        route=route,
        headers=tuple(headers),
        body=body,
        status=outcome.status,
        rescue=outcome.rescue,
        withheld=tuple(withheld),
    )


def public_view(record: RequestRecord) -> dict[str, object]:
    """The record as JSON shows it (`replay --show --json`), the body base64."""
    return {
        "request_id": record.request_id,
        "time": record.time,
        "method": record.method,
        "url": record.url,
        "route": record.route,
        "headers": [list(pair) for pair in record.headers],
        "body": None if record.body is None else base64.b64encode(record.body).decode(),
        "status": record.status,
        "rescue": record.rescue,
        "withheld": list(record.withheld),
    }


def encode(record: RequestRecord) -> bytes:
    """The record as the store keeps it: its public view with a format version."""
    return orjson.dumps({"v": VERSION, **public_view(record)})


def decode(data: bytes) -> RequestRecord:
    """A record from `encode`'s bytes; ValueError naming the field at fault."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ValueError("request record: not JSON") from None
    if not isinstance(raw, dict):
        raise ValueError("request record: not a JSON object")
    if raw.get("v") != VERSION:
        raise ValueError(f"request record: unknown version (this mirapi reads {VERSION})")
    headers = _field(raw, "headers", list)
    if not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        for pair in headers
    ):
        raise ValueError("request record: bad field 'headers'")
    body_text = _field(raw, "body", str, optional=True)
    try:
        body = None if body_text is None else base64.b64decode(body_text, validate=True)
    except binascii.Error:
        raise ValueError("request record: bad field 'body'") from None
    withheld = _field(raw, "withheld", list)
    if not all(isinstance(item, str) for item in withheld):
        raise ValueError("request record: bad field 'withheld'")
    time = _field(raw, "time", (int, float))
    status = _field(raw, "status", int)
    return RequestRecord(
        request_id=_field(raw, "request_id", str),
        time=float(time),
        method=_field(raw, "method", str),
        url=_field(raw, "url", str),
        route=_field(raw, "route", str, optional=True),
        headers=tuple((name, value) for name, value in headers),
        body=body,
        status=status,
        rescue=_field(raw, "rescue", str, optional=True),
        withheld=tuple(withheld),
    )


def _field(
    raw: dict[str, Any], name: str, kind: type | tuple[type, ...], *, optional: bool = False
) -> Any:
    value = raw.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"request record: bad field {name!r}")
    return value


class RecordStore(Protocol):
    """What the recorder needs of the store."""

    async def requests_put(self, items: Sequence[tuple[str, bytes]]) -> None: ...


class Recorder:
    """Keeps a record of each proxied request for `mirapi replay` (an `Observer`)."""

    def __init__(self, store: RecordStore, record_bodies: bool, *, interval: float = 0.25) -> None:
        self._record_bodies = record_bodies
        self._writer: BatchWriter[tuple[str, bytes]] = BatchWriter(
            "request records", store.requests_put, interval=interval
        )

    def observe(self, outcome: Outcome) -> None:
        """Queue `outcome`'s record (if it may have one); never raises."""
        try:
            record = build_record(outcome, self._record_bodies)
            if record is not None:
                self._writer.add((record.request_id, encode(record)))
        except Exception as error:
            # The type only: a message could quote the request.
            log.warning("request %s not recorded (%s)", outcome.request_id, type(error).__name__)

    async def start(self) -> None:
        await self._writer.start()

    async def stop(self) -> None:
        """Stop, writing what is still queued."""
        await self._writer.stop()

    async def flush(self) -> None:
        """Write what is queued now (tests, shutdown)."""
        await self._writer.flush()
