"""The PCI guard (SPEC §2.2): a request carrying a card number goes nowhere.

The path (as received, path mode's `/r/NAME` included), the query string,
the body (any content type) and the URLs the client names (X-Target-URL,
X-Failover-URL: their path and query go upstream too) are scanned with
`sidecar.security.pci.find_card_number`. Found: `400 pci_card_number`, naming where
(the path, the query string or the body) and the byte offset, never the
digits. The stage sits before idempotency, async jobs and the cache, so
nothing of a blocked request is stored, queued or sent; the error message
is the only trace.

The query string and a form-encoded body are also scanned URL-decoded,
since `4111+1111+1111+1111` and `4111%201111%201111%201111` are grouped
card numbers once decoded; the path (and a job's headers) with their `%XX`
escapes decoded, a `+` being a plus there (`/lookup/+4915112345678` is a
phone number). The offset is then one in the decoded text, and the message
says so.

Headers are forwarded as sent and masked where the sidecar stores them
(request records). A job (`X-Webhook-Callback`) is the exception: it stores
its request's headers to send them later, and masking them would change
the request, so a job submission with a card number in any header (as
sent or URL-decoded, with its name as the number's label) is refused here
the same way, before anything is stored.

A route may switch the guard off (`pci_guard = false`, for a card vault
such as a tokenization endpoint); no header can.
"""

from __future__ import annotations

from collections.abc import Callable

from sidecar.errors import PciCardNumber
from sidecar.exchange import Exchange, Next, Response
from sidecar.security.pci import (
    find_card_number,
    mask_card_numbers,
    may_be_encoded,
    percent_decoded,
    text_bytes,
    url_decoded,
)

FORM_TYPE = "application/x-www-form-urlencoded"


#: How a place is decoded before it is scanned again (None: it is not).
Decode = Callable[[bytes], bytes] | None


def card_offset(data: bytes, decode: Decode) -> tuple[int, bool] | None:
    """(offset, in the decoded text) of the first card number in `data`, or None.

    Encoded text is read decoded first, as its receiver will: in a query or
    a form a raw `+` is a space, not the `+` of a phone number, so the raw
    text could show another number than the one sent. Then as sent (a `%`
    that is no escape can keep a card from the decoded text).
    """
    if decode is not None and may_be_encoded(data):
        decoded = decode(data)
        offset = None if decoded == data else find_card_number(decoded)
        if offset is not None:
            return offset, True
    offset = find_card_number(data)
    return None if offset is None else (offset, False)


def card_in(data: bytes, place: str, decode: Decode) -> str | None:
    """Where in `data` a card number is ("the body at offset 12"), or None."""
    found = card_offset(data, decode)
    if found is None:
        return None
    offset, decoded = found
    return f"{place} at offset {offset}" + (" once URL-decoded" if decoded else "")


def card_in_path(exchange: Exchange) -> str | None:
    """Where in the path as received a card number is, or None."""
    # In a path a `+` is a plus (`/v1/lookup/+4915112345678`), only `%XX` is decoded.
    return card_in(text_bytes(exchange.received_path()), "the path", percent_decoded)


def card_in_payload(exchange: Exchange) -> str | None:
    """Where in the query string or body a card number is, or None."""
    if exchange.query:
        found = card_in(text_bytes(exchange.query), "the query string", url_decoded)
        if found is not None:
            return found
    content_type = (exchange.header("content-type") or "").lower()
    form = content_type.startswith(FORM_TYPE)
    return card_in(exchange.body, "the body", url_decoded if form else None)


def card_in_target_urls(exchange: Exchange) -> str | None:
    """Where a URL the client named (X-Target-URL, X-Failover-URL) holds a card number.

    Its path and query are sent upstream as they are: a card there would
    leave as surely as one in the request's own query string.
    """
    policy = exchange.policy
    named = [("X-Target-URL", policy.target_url)] if policy.target_url else []
    named += [("X-Failover-URL", url) for url in policy.failover_urls]
    for header, url in named:
        found = card_in(text_bytes(url), f"{header}", url_decoded)
        if found is not None:
            return found
    return None


def card_location(exchange: Exchange) -> str | None:
    """Where the request's path, query, body or target URLs carry a card number, or None."""
    return card_in_path(exchange) or card_in_payload(exchange) or card_in_target_urls(exchange)


def card_in_headers(exchange: Exchange) -> str | None:
    """Where a header holds a card number ("the x-note header at offset 9"), or None.

    Each header is scanned as `name: value`, so that its name is the label
    of a 17-19 digit number (`X-Card-Number: ...`). The offset is in the value.
    """
    for name, value in exchange.headers:
        prefix = text_bytes(name) + b": "
        # A header is no form: a `+` is a plus (`X-Phone: +49...`), `%XX` a byte.
        found = card_offset(prefix + text_bytes(value), percent_decoded)
        if found is None:
            continue
        offset, decoded = found
        skipped = len(percent_decoded(prefix)) if decoded else len(prefix)
        # A name is a token and never a card; masked all the same, never echoed.
        shown = mask_card_numbers(text_bytes(name)).decode("latin-1")
        where = f"the {shown} header at offset {max(0, offset - skipped)}"
        return where + (" once URL-decoded" if decoded else "")
    return None


def guard_applies(exchange: Exchange) -> bool:
    """Off only for a route that says so; a request without a route is always scanned."""
    return exchange.route is None or exchange.route.pci_guard


#: What every refusal adds: how an endpoint that must get card numbers can.
_ROUTE_HINT = (
    "use a route with pci_guard = false for an endpoint that must receive card numbers"
)


class PciGuard:
    """Refuses (400 pci_card_number) a request whose path, query or body holds a card
    number, and a job whose headers hold one."""

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        if guard_applies(exchange):
            where = card_location(exchange)
            if where is not None:
                raise PciCardNumber(
                    f"a payment card number was found in {where}; "
                    f"the request was not sent ({_ROUTE_HINT})"
                )
            if exchange.policy.webhook_callback is not None:
                where = card_in_headers(exchange)
                if where is not None:
                    raise PciCardNumber(
                        f"a payment card number was found in {where}; the job was not "
                        "accepted: a job keeps its request's headers as sent, so a card "
                        f"number in one cannot be masked ({_ROUTE_HINT})"
                    )
        return await call_next(exchange)
