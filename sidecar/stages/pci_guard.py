"""The PCI guard (SPEC §2.2): a request carrying a card number goes nowhere.

The body (any content type) and the query string are scanned with
`sidecar.pci.find_card_number`. Found: `400 pci_card_number`, naming where
(body or query string) and the byte offset, never the digits. The stage
sits before idempotency, async jobs and the cache, so nothing of a blocked
request is stored, queued or sent; the error message is the only trace.

The query string, and a form-encoded body, are also scanned URL-decoded,
since `4111+1111+1111+1111` is a grouped card number once decoded; the
offset is then one in the decoded text, and the message says so.

A route may switch the guard off (`pci_guard = false`, for a card vault
such as a tokenization endpoint); no header can.
"""

from __future__ import annotations

from sidecar.errors import PciCardNumber
from sidecar.exchange import Exchange, Next, Response
from sidecar.pci import find_card_number, may_be_encoded, url_decoded

FORM_TYPE = "application/x-www-form-urlencoded"


def card_in(data: bytes, place: str, url_encoded: bool) -> str | None:
    """Where in `data` a card number is ("the body at offset 12"), or None."""
    offset = find_card_number(data)
    if offset is not None:
        return f"{place} at offset {offset}"
    if url_encoded and may_be_encoded(data):
        offset = find_card_number(url_decoded(data))
        if offset is not None:
            return f"{place} at offset {offset} once URL-decoded"
    return None


def card_location(exchange: Exchange) -> str | None:
    """Where the request carries a card number, or None when it carries none."""
    if exchange.query:
        # The edge decodes the raw query as latin-1, so this gives back its bytes.
        query = exchange.query.encode("latin-1", "replace")
        found = card_in(query, "the query string", url_encoded=True)
        if found is not None:
            return found
    content_type = (exchange.header("content-type") or "").lower()
    return card_in(exchange.body, "the body", url_encoded=content_type.startswith(FORM_TYPE))


def guard_applies(exchange: Exchange) -> bool:
    """Off only for a route that says so; a request without a route is always scanned."""
    return exchange.route is None or exchange.route.pci_guard


class PciGuard:
    """Refuses (400 pci_card_number) a request whose body or query holds a card number."""

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        if guard_applies(exchange):
            where = card_location(exchange)
            if where is not None:
                raise PciCardNumber(
                    f"a payment card number was found in {where}; "
                    "the request was not sent (use a route with pci_guard = false "
                    "for an endpoint that must receive card numbers)"
                )
        return await call_next(exchange)
