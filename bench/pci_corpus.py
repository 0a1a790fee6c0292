"""Generated bodies for the PCI guard's recall and false-positive figures (bench/pci.py).

Everything comes from one seeded `random.Random`, so a run is repeatable
and no data set is shipped or fetched.

- `card_bodies`: realistic JSON and form bodies holding one card number:
  every row of the brand table (`sidecar.security.pci.BRANDS`) at every length it
  issues, plain, spaced and dashed (Amex 4-6-5 and Diners 4-6-4, the rest
  by fours; in form bodies a space is sent as `+` or `%20`), under a card
  key (`card_number`, `cardNumber`, `{"card": {"number": }}`, `pan`, `cc`,
  `card[number]=`), after card words in free text ("charge my card ..."),
  or under a key that says nothing (`memo`, `reference`, `comment`).
- `clean_bodies`: realistic bodies without one, dense in the numbers that
  look like cards: Discord and Twitter snowflake ids (17-19 digits),
  timestamps in s, ms, µs and ns, amounts, phone numbers (E.164 and local
  spellings, spaced and dashed), UUIDs, and 17-19 digit order numbers,
  a third of them made to start like a card brand and pass Luhn.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

from sidecar.security.pci import BRANDS, MAX_DIGITS_WITHOUT_CONTEXT, luhn_valid, url_decoded

#: Where a card sits: a card key, card words in text, or a key that says nothing.
CARD_KEY = "card key"
CARD_WORDS = "card words"
NO_LABEL = "no label"
PLACES = (CARD_KEY, CARD_WORDS, NO_LABEL)
GROUPINGS = ("plain", "spaces", "dashes")

DISCORD_EPOCH_MS = 1_420_070_400_000
TWITTER_EPOCH_MS = 1_288_834_974_657
NOW_MS = 1_765_000_000_000
YEAR_MS = 365 * 86_400_000


@dataclass(frozen=True, slots=True)
class CardBody:
    """One body with a card number in it, and what it is made of."""

    body: bytes
    form: bool
    #: Where the card starts in `body` as sent (None: only URL-decoded is it one).
    raw_offset: int | None
    #: Where it starts in `body` URL-decoded (form bodies; JSON: as sent).
    decoded_offset: int
    digits: int
    brand: str
    grouping: str
    place: str


def with_check_digit(rng: random.Random, prefix: str, length: int) -> str:
    """A number of `length` digits starting with `prefix` that passes Luhn."""
    partial = prefix + digits(rng, length - len(prefix) - 1)
    for digit in "0123456789":
        if luhn_valid((partial + digit).encode()):
            return partial + digit
    raise AssertionError("unreachable: one of ten digits completes Luhn")


def group_sizes(length: int) -> list[int]:
    """How the card is grouped when printed: 4-6-5 (Amex), 4-6-4 (Diners), else fours."""
    if length == 15:
        return [4, 6, 5]
    if length == 14:
        return [4, 6, 4]
    return [4] * (length // 4) + ([length % 4] if length % 4 else [])


def grouped(number: str, grouping: str) -> str:
    """`number` plain, or in its printed groups joined by spaces or dashes."""
    if grouping == "plain":
        return number
    parts, at = [], 0
    for size in group_sizes(len(number)):
        parts.append(number[at : at + size])
        at += size
    return (" " if grouping == "spaces" else "-").join(parts)


# --- filler: what realistic bodies hold besides a card ---------------------------

FIRST = ["Ana", "Ben", "Chen", "Dara", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jun"]
LAST = ["Silva", "Okafor", "Novak", "Haddad", "Kim", "Müller", "Rossi", "Tanaka", "Berg"]
CITIES = ["Lisbon", "Lagos", "Zagreb", "Beirut", "Seoul", "Berlin", "Milan", "Osaka"]
WORDS = "the order shipped late please call before delivery gate code leave at door".split()


def snowflake(rng: random.Random) -> int:
    """A Discord or Twitter id: milliseconds since its epoch << 22, plus worker bits.

    Minted from a year after the epoch on (18-19 digits): ids from a
    service's first weeks, 16-17 digits, are too few to weigh in.
    """
    epoch = rng.choice((DISCORD_EPOCH_MS, TWITTER_EPOCH_MS))
    ms = rng.randint(epoch + YEAR_MS, NOW_MS) - epoch
    return (ms << 22) | rng.getrandbits(22)


def timestamp(rng: random.Random) -> int:
    """A unix time in s, ms, µs or ns (10, 13, 16 or 19 digits)."""
    seconds = rng.uniform(1_500_000_000, 1_800_000_000)
    return int(seconds * rng.choice((1, 1_000, 1_000_000, 1_000_000_000)))


def digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def phone(rng: random.Random) -> str:
    """A phone number the way people type them: E.164, spaced, dashed, bracketed."""
    area = rng.randint(201, 989)
    return rng.choice(
        (
            f"+44 20 {digits(rng, 4)} {digits(rng, 4)}",
            f"+44{digits(rng, 10)}",
            f"+1 {area}-{digits(rng, 3)}-{digits(rng, 4)}",
            f"+1{area}{digits(rng, 7)}",
            f"({area}) {digits(rng, 3)}-{digits(rng, 4)}",
            f"+49 {digits(rng, 3)} {digits(rng, 8)}",
            f"+81-{digits(rng, 2)}-{digits(rng, 4)}-{digits(rng, 4)}",
            f"+55 11 9{digits(rng, 4)}-{digits(rng, 4)}",
        )
    )


def order_number(rng: random.Random) -> str:
    """A 17-19 digit order number; a third start like a card brand and pass Luhn."""
    length = rng.randint(17, 19)
    if rng.random() < 1 / 3:
        first, last, _ = rng.choice(BRANDS)
        prefix = str(rng.randint(int(first), int(last))).zfill(len(first))
        return with_check_digit(rng, prefix, length)
    return str(rng.randint(1, 9)) + digits(rng, length - 1)


def amount(rng: random.Random) -> int | str:
    """Minor units (an int) or a decimal string."""
    cents = rng.randint(50, 5_000_000)
    return cents if rng.random() < 0.5 else f"{cents / 100:.2f}"


def customer(rng: random.Random) -> dict[str, object]:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    return {
        "id": str(snowflake(rng)),
        "name": name,
        "email": f"{name.split()[0].lower()}{rng.randint(1, 999)}@example.com",
        "phone": phone(rng),
        "address": {"city": rng.choice(CITIES), "postal_code": f"{rng.randint(1000, 99999)}"},
    }


def items(rng: random.Random) -> list[dict[str, object]]:
    return [
        {
            "sku": f"SKU-{rng.randint(10000, 99999)}",
            "qty": rng.randint(1, 5),
            "unit_amount": amount(rng),
            "product_id": str(snowflake(rng)),
        }
        for _ in range(rng.randint(1, 4))
    ]


def order_record(rng: random.Random) -> dict[str, object]:
    """An order as shops and payment APIs send it, no card in it."""
    return {
        "order_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "order_number": order_number(rng),
        "number": rng.randint(1000, 99999),
        "created": timestamp(rng),
        "updated_at_ns": timestamp(rng),
        "amount": amount(rng),
        "currency": rng.choice(("usd", "eur", "gbp", "jpy")),
        "customer": customer(rng),
        "items": items(rng),
        "note": " ".join(rng.choices(WORDS, k=rng.randint(3, 9))),
    }


def chat_event(rng: random.Random) -> dict[str, object]:
    """A Discord-style message event: snowflakes everywhere."""
    return {
        "t": "MESSAGE_CREATE",
        "s": rng.randint(1, 9999),
        "d": {
            "id": str(snowflake(rng)),
            "channel_id": str(snowflake(rng)),
            "guild_id": str(snowflake(rng)),
            "author": {"id": str(snowflake(rng)), "username": rng.choice(FIRST).lower()},
            "content": " ".join(rng.choices(WORDS, k=rng.randint(2, 12))),
            "timestamp_ms": timestamp(rng),
            "nonce": str(snowflake(rng)),
            "referenced_message_id": snowflake(rng),
        },
    }


def metrics_batch(rng: random.Random) -> dict[str, object]:
    """A telemetry batch: nanosecond timestamps, trace ids, counters."""
    return {
        "resource": {"service": "checkout", "instance": str(uuid.UUID(int=rng.getrandbits(128)))},
        "points": [
            {
                "name": rng.choice(("latency_ms", "requests", "errors", "queue_depth")),
                "time_unix_nano": timestamp(rng),
                "value": rng.random() * 1000,
                "trace_id": f"{rng.getrandbits(128):032x}",
                "span_id": str(snowflake(rng)),
            }
            for _ in range(rng.randint(3, 12))
        ],
    }


def form_fields(rng: random.Random) -> list[tuple[str, str]]:
    """A checkout form's fields, no card."""
    person = customer(rng)
    return [
        ("amount", str(amount(rng))),
        ("currency", "usd"),
        ("order_number", order_number(rng)),
        ("customer_id", str(person["id"])),
        ("phone", str(person["phone"])),
        ("email", str(person["email"])),
        ("created", str(timestamp(rng))),
        ("idempotency", str(uuid.UUID(int=rng.getrandbits(128)))),
    ]


def encode_form(fields: list[tuple[str, str]], rng: random.Random) -> bytes:
    """URL-encoded as browsers (`+` for a space) or curl --data-urlencode (`%20`) send it."""
    plus = rng.random() < 0.5
    pairs = []
    for name, value in fields:
        encoded = quote(value, safe="")
        if plus:
            encoded = encoded.replace("%20", "+")
        pairs.append(f"{quote(name, safe='[]')}={encoded}")
    return "&".join(pairs).encode()


CLEAN_KINDS: tuple[Callable[[random.Random], dict[str, object]], ...] = (
    order_record,
    chat_event,
    metrics_batch,
)


def clean_bodies(rng: random.Random, count: int) -> Iterator[tuple[bytes, bool]]:
    """`count` realistic bodies without a card number: (body, is a form body)."""
    for index in range(count):
        if index % 5 == 4:
            yield encode_form(form_fields(rng), rng), True
        else:
            record = rng.choice(CLEAN_KINDS)(rng)
            yield json.dumps(record, ensure_ascii=False).encode(), False


# --- bodies with a card ----------------------------------------------------------

#: JSON shapes that put a card under a card key; `{}` is where the card goes.
JSON_CARD_KEYS = (
    '"card_number": "{}"',
    '"cardNumber": "{}"',
    '"card": {{"number": "{}", "exp_month": 12, "exp_year": 2031}}',
    '"pan": "{}"',
    '"cc": "{}"',
    '"payment_method": {{"type": "card", "card": "{}"}}',
)
FORM_CARD_KEYS = ("card[number]", "pan", "cc_number", "card_number", "number")
CARD_PHRASES = (
    "please charge my card {} today",
    "customer read out the card number: {}",
    "Visa {} exp 12/31",
    "refund to credit card {}",
)
NO_LABEL_KEYS = ("memo", "reference", "comment", "description")


def card_in_json(rng: random.Random, place: str) -> tuple[str, str]:
    """(before, after) the card in a JSON order body, the card placed as `place` says."""
    record = order_record(rng)
    marker = "\x00CARD\x00"
    if place == CARD_KEY:
        member = rng.choice(JSON_CARD_KEYS).format(marker)
    elif place == CARD_WORDS:
        member = f'"note": "{rng.choice(CARD_PHRASES).format(marker)}"'
    else:
        member = f'"{rng.choice(NO_LABEL_KEYS)}": "{marker}"'
    rendered = json.dumps(record, ensure_ascii=False)
    body = rendered[:-1] + ", " + member + "}"
    before, _, after = body.partition(marker)
    return before, after


def card_in_form(rng: random.Random, text: str, place: str) -> tuple[bytes, int | None, int]:
    """(body, offset as sent or None, offset URL-decoded) of a form body with the card."""
    fields = form_fields(rng)
    if place == CARD_KEY:
        field = (rng.choice(FORM_CARD_KEYS), text)
    elif place == CARD_WORDS:
        field = ("note", rng.choice(CARD_PHRASES).format(text))
    else:
        field = (rng.choice(NO_LABEL_KEYS), text)
    at = rng.randint(0, len(fields))
    fields.insert(at, field)
    body = encode_form(fields, rng)
    raw = body.find(text.encode())
    return body, None if raw < 0 else raw, url_decoded(body).index(text.encode())


def card_bodies(rng: random.Random, repeats: int) -> Iterator[CardBody]:
    """Every brand row x length x grouping x place x (JSON, form), `repeats` times each."""
    for _ in range(repeats):
        for first, last, lengths in BRANDS:
            brand = f"{first}-{last}" if first != last else first
            for length in sorted(lengths):
                for grouping in GROUPINGS:
                    for place in PLACES:
                        prefix = str(rng.randint(int(first), int(last))).zfill(len(first))
                        text = grouped(with_check_digit(rng, prefix, length), grouping)
                        before, after = card_in_json(rng, place)
                        offset = len(before.encode())
                        body = (before + text + after).encode()
                        yield CardBody(body, False, offset, offset, length, brand, grouping, place)
                        body, raw, decoded = card_in_form(rng, text, place)
                        yield CardBody(body, True, raw, decoded, length, brand, grouping, place)


def needs_label(card: CardBody) -> bool:
    """True for a card the rules count only in a card context (17-19 digits)."""
    return card.digits > MAX_DIGITS_WITHOUT_CONTEXT
