"""Finding payment card numbers (PANs) in bytes, for the PCI guard (SPEC §2.2).

A card number here is a run of 12-19 digits, plain or grouped by one kind
of single separator (`4111 1111 1111 1111`, `4111-1111-1111-1111`), that
passes Luhn *and* starts with a prefix of a card brand at a length that
brand issues (`BRANDS`). Luhn alone would flag one random digit run in
ten: millisecond timestamps, order ids, phone numbers.

The common case is a body with no long digit run at all, so one compiled
regex finds candidates and everything else runs only on those. A candidate
is a run of digits, spaces and dashes from a digit some brand starts with;
it is split into digit groups, and when it holds more than one number
(`4111 1111 1111 1111 2031`), every window of whole groups with 12-19
digits and one kind of separator is tried, so a card next to another
number is still found. A group of more than 19
digits is not a card: real card numbers are delimited.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

_SEPARATOR = re.compile(rb"([ -])")

MIN_DIGITS = 12
MAX_DIGITS = 19

#: (first prefix, last prefix, lengths): the IIN ranges DLP tools use.
#: Prefixes are compared on their own number of leading digits. Broad
#: "any other 6" rules are left out on purpose: they would flag order ids.
BRANDS: tuple[tuple[str, str, frozenset[int]], ...] = (
    # Visa
    ("4", "4", frozenset({13, 16, 19})),
    # Mastercard, old and 2-series ranges
    ("51", "55", frozenset({16})),
    ("2221", "2720", frozenset({16})),
    # American Express
    ("34", "34", frozenset({15})),
    ("37", "37", frozenset({15})),
    # Discover
    ("6011", "6011", frozenset(range(16, 20))),
    ("644", "649", frozenset(range(16, 20))),
    ("65", "65", frozenset(range(16, 20))),
    # Diners Club
    ("300", "305", frozenset(range(14, 20))),
    ("36", "36", frozenset(range(14, 20))),
    ("38", "39", frozenset(range(14, 20))),
    # JCB
    ("3528", "3589", frozenset(range(16, 20))),
    # UnionPay
    ("62", "62", frozenset(range(16, 20))),
    # Maestro
    ("50", "50", frozenset(range(12, 20))),
    ("56", "58", frozenset(range(12, 20))),
    ("6304", "6304", frozenset(range(12, 20))),
    ("6390", "6390", frozenset(range(12, 20))),
    ("67", "67", frozenset(range(12, 20))),
    # Mir
    ("2200", "2204", frozenset(range(16, 20))),
)

_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: bytes) -> bool:
    """True when the ASCII digit string `digits` passes the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = char - 48
        total += _DOUBLED[value] if position & 1 else value
    return total % 10 == 0


def _prefixes_by_length() -> dict[int, tuple[tuple[bytes, bytes], ...]]:
    """BRANDS turned around: per length, the (first, last) prefixes that issue it."""
    table: dict[int, list[tuple[bytes, bytes]]] = {}
    for first, last, lengths in BRANDS:
        for length in lengths:
            table.setdefault(length, []).append((first.encode(), last.encode()))
    return {length: tuple(ranges) for length, ranges in table.items()}


_PREFIXES_BY_LENGTH = _prefixes_by_length()


#: The first digit of every prefix in BRANDS, as a byte value.
_BRAND_FIRST_DIGITS = frozenset(first.encode()[0] for first, _, _ in BRANDS)
_DIGITS = frozenset(b"0123456789")

#: From a digit some brand starts with, digits, spaces and dashes to a digit,
#: 12 bytes or more. A character-class run is several times faster than a
#: per-digit group, and skipping runs that start with 0, 1, 7, 8 or 9
#: (timestamps, most ids) keeps most numbers from reaching Python at all.
#: `_card_in_run` keeps only single separators of one kind.
_CANDIDATE = re.compile(b"[" + bytes(sorted(_BRAND_FIRST_DIGITS)) + rb"][0-9 -]{10,}[0-9]")


def in_brand_table(digits: bytes) -> bool:
    """True when `digits` starts with a brand's prefix at a length that brand issues."""
    for first, last in _PREFIXES_BY_LENGTH.get(len(digits), ()):
        if first <= digits[: len(first)] <= last:
            return True
    return False


def is_card_number(digits: bytes) -> bool:
    """True when the plain digit string `digits` is a plausible card number."""
    return MIN_DIGITS <= len(digits) <= MAX_DIGITS and in_brand_table(digits) and luhn_valid(digits)


def _first_window(groups: list[bytes], remaining: int) -> int | None:
    """The index of the first group that starts a card number, or None.

    `groups` are the digit groups of a run joined by one kind of separator,
    in order (empty where two separators meet), `remaining` their digits in
    all. A window extends over whole, non-empty groups.
    """
    for first, group in enumerate(groups):
        if remaining < MIN_DIGITS:
            return None
        remaining -= len(group)
        if not group or group[0] not in _BRAND_FIRST_DIGITS:
            continue
        digits = group
        following = first + 1
        while len(digits) <= MAX_DIGITS:
            if len(digits) >= MIN_DIGITS and is_card_number(digits):
                return first
            if following == len(groups) or not groups[following]:
                break
            digits += groups[following]
            following += 1
    return None


def _card_in_run(run: bytes) -> int | None:
    """The offset in `run` (a candidate match) of the first card number, or None."""
    if run.isdigit():
        return 0 if is_card_number(run) else None
    has_space = b" " in run
    if has_space and b"-" in run:
        return _mixed_run(run)
    groups = run.split(b" " if has_space else b"-")
    first = _first_window(groups, len(run) - len(groups) + 1)
    if first is None:
        return None
    # Every separator is one byte, so a group's offset is its digits before plus its index.
    return sum(len(group) for group in groups[:first]) + first


def _mixed_run(run: bytes) -> int | None:
    """`_card_in_run` for a run with both spaces and dashes (rare, so the slow way)."""
    parts = _SEPARATOR.split(run)
    groups = parts[::2]
    separators = parts[1::2]
    offset = 0
    for first in range(len(groups)):
        # One kind of separator per card number: `4111 1111-1111 1111` is no grouping.
        window = [groups[first]]
        kind = separators[first] if first < len(separators) else b""
        for following in range(first + 1, len(groups)):
            if separators[following - 1] != kind:
                break
            window.append(groups[following])
        if _first_window(window, sum(map(len, window))) == 0:
            return offset
        offset += len(groups[first]) + 1
    return None


def find_card_number(data: bytes) -> int | None:
    """The byte offset of the first card number in `data`, or None."""
    for match in _CANDIDATE.finditer(data):
        start = match.start()
        run = match.group()
        if start and data[start - 1] in _DIGITS:
            # Begun inside a group whose first digit starts no brand: only
            # the groups after it can start a card number.
            cut = min((i for i in (run.find(b" "), run.find(b"-")) if i >= 0), default=-1)
            if cut < 0:
                continue
            start += cut + 1
            run = run[cut + 1 :]
        found = _card_in_run(run)
        if found is not None:
            return start + found
    return None


def url_decoded(data: bytes) -> bytes:
    """`data` as a form or query decoder sees it: `+` is a space, `%XX` a byte."""
    return unquote_to_bytes(data.replace(b"+", b" "))


def may_be_encoded(data: bytes) -> bool:
    """True when URL-decoding could change `data` (it holds `+` or `%`)."""
    return b"%" in data or b"+" in data
