"""Finding payment card numbers (PANs) in bytes, for the PCI guard (SPEC §2.2).

A card number here is a run of 12-19 digits, plain or grouped by one kind
of single separator (`4111 1111 1111 1111`, `4111-1111-1111-1111`), that
passes Luhn *and* starts with a prefix of a card brand at a length that
brand issues (`BRANDS`). Luhn alone would flag one random digit run in
ten: millisecond timestamps, order ids, phone numbers. A card starts a
digit group (the byte before it is no digit) and spans whole groups: a
group of more than 19 digits is no card, real card numbers are delimited.

The scan runs on every request, so it is built in two tiers, and the
common case never leaves C code:

1. The screen. One `bytes.translate` maps the body to a "squeezed" copy:
   separators deleted, every digit turned into a letter saying which brands
   it may start, everything else into `x`. A card becomes an unbroken run of
   digit letters, so a digit-counting question ("a 4 followed by 12 more
   digits") is a plain character-class regex with a one-letter literal
   prefix, which `re` looks for with a bare byte-compare loop (a class at
   the start of a pattern is several times slower, a per-digit group
   slower still).
   There is one screen per class of first digit (`_SCREENS`): a 4 starts no
   card shorter than 13 digits, which is what lets the common 12-digit phone
   number through without any Python code. A screen hit is necessary for a
   card, not sufficient (separators were ignored).
2. The check, only near a screen hit: the run of digits, spaces and dashes
   there (`_CANDIDATE`) is split into digit groups and every window of whole
   groups with 12-19 digits and one kind of separator is tried against the
   brand table and then Luhn.

A screen hit's squeezed offset, stepped forward by in the body, never
overshoots where it lies there (the squeezed copy only lost bytes), and
counting the separators crossed narrows the gap (`_toward`); the check
starts there, and afterwards the screens resume after the run just
checked. A body with many near misses costs one check per near miss,
never a rescan. `tests/sidecar/test_pci.py` holds the scanner to the
definition above, spelt out the slow way.
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

#: Per digit value: the sum of the digits of its double (Luhn's doubled positions).
_DOUBLED = bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9))
#: ASCII digit -> its doubled Luhn value, so `sum()` can add a whole slice in C.
_DOUBLED_TABLE = bytes.maketrans(b"0123456789", _DOUBLED)


def luhn_valid(digits: bytes) -> bool:
    """True when the ASCII digit string `digits` passes the Luhn check."""
    # From the check digit leftwards: positions 0, 2, 4... count as they are,
    # 1, 3, 5... doubled. Slices and translate keep the loop in C.
    kept = digits[::-1][::2]
    doubled = digits[::-1][1::2].translate(_DOUBLED_TABLE)
    return (sum(kept) - 48 * len(kept) + sum(doubled)) % 10 == 0


#: No prefix in BRANDS is longer, so a card's first four digits decide its brand.
_KEY_DIGITS = max(len(first) for first, _, _ in BRANDS)


def _brand_keys() -> frozenset[tuple[int, bytes]]:
    """BRANDS spelt out: every (length, first four digits) some brand issues.

    About 12,000 keys, built once: a set lookup is several times faster
    than comparing a number against each of the ranges for its length.
    """
    keys: set[tuple[int, bytes]] = set()
    for first, last, lengths in BRANDS:
        pad = _KEY_DIGITS - len(first)
        low = int(first) * 10**pad
        high = (int(last) + 1) * 10**pad
        for prefix in range(low, high):
            key = str(prefix).zfill(_KEY_DIGITS).encode()
            keys.update((length, key) for length in lengths)
    return frozenset(keys)


_BRAND_KEYS = _brand_keys()


def _shortest_by_first_digit() -> dict[int, int]:
    """Per digit (byte value) some brand starts with: the fewest digits such a card has."""
    shortest: dict[int, int] = {}
    for first, last, lengths in BRANDS:
        for digit in range(ord(first[0]), ord(last[0]) + 1):
            shortest[digit] = min(shortest.get(digit, MAX_DIGITS), min(lengths))
    return shortest


_SHORTEST = _shortest_by_first_digit()

#: The first digit of every prefix in BRANDS, as a byte value.
_BRAND_FIRST_DIGITS = frozenset(_SHORTEST)
_DIGITS = frozenset(b"0123456789")


def _screens() -> tuple[bytes, tuple[re.Pattern[bytes], ...]]:
    """The squeezing translate table and one screen regex per class of first digit.

    Digits that start cards of at least MIN_DIGITS become `a`, those whose
    cards are longer (Visa's 4: 13) `b`, with the shortest length of that
    class; other digits become `0`, anything else `x`. Two classes, not one
    per first digit: every screen is one more pass over the body, and the
    second class already keeps 12-digit numbers starting with 4 (phone
    numbers) out of the check.
    """
    table = bytearray(b"x" * 256)
    for digit in b"0123456789":
        table[digit] = ord("0")
    shortest_of: dict[bytes, int] = {}
    for digit, shortest in _SHORTEST.items():
        letter = b"a" if shortest == MIN_DIGITS else b"b"
        table[digit] = letter[0]
        shortest_of[letter] = min(shortest_of.get(letter, MAX_DIGITS), shortest)
    digit_letters = b"0" + b"".join(sorted(shortest_of))
    screens = tuple(
        re.compile(re.escape(letter) + b"[" + digit_letters + b"]{%d}" % (shortest - 1))
        for letter, shortest in sorted(shortest_of.items())
    )
    return bytes(table), screens


_SQUEEZE, _SCREENS = _screens()

#: From a digit some brand starts with, digits, spaces and dashes to a digit,
#: 12 bytes or more: the run a screen hit lies in. A character-class run is
#: several times faster than a per-digit group. `_card_in_run` keeps only
#: single separators of one kind.
_CANDIDATE = re.compile(b"[" + bytes(sorted(_BRAND_FIRST_DIGITS)) + rb"][0-9 -]{10,}[0-9]")

#: How many times `_toward` narrows its bound before letting `_CANDIDATE`
#: search the rest: each pass shrinks the gap to the separators it crossed.
_NARROWING_STEPS = 4
#: A gap this small is left to `_CANDIDATE`'s search: it can rarely hold a
#: candidate of its own (one is 12 bytes or more), so it costs a few bytes
#: of scanning, where another narrowing step costs two counts.
_CLOSE_ENOUGH = MIN_DIGITS


def in_brand_table(digits: bytes) -> bool:
    """True when `digits` starts with a brand's prefix at a length that brand issues."""
    return (len(digits), digits[:_KEY_DIGITS]) in _BRAND_KEYS


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


def _card_in_match(data: bytes, match: re.Match[bytes]) -> int | None:
    """The offset in `data` of the first card number in the `_CANDIDATE` match, or None."""
    start = match.start()
    run = match.group()
    if start and data[start - 1] in _DIGITS:
        # Begun inside a group (one whose first digit starts no brand, or
        # one before where the search began, where no card starts): only
        # the groups after it can start a card number.
        cut = min((i for i in (run.find(b" "), run.find(b"-")) if i >= 0), default=-1)
        if cut < 0:
            return None
        start += cut + 1
        run = run[cut + 1 :]
    found = _card_in_run(run)
    return None if found is None else start + found


def _kept(data: bytes, start: int, end: int, kept_after: int) -> int:
    """How many bytes of `data[start:end]` the squeezed copy keeps (all but separators).

    `kept_after` is how many of `data[start:]` it keeps, so the separators can
    be counted in whichever of `data[start:end]` and `data[end:]` is shorter:
    a hit near the end of a large body costs a count of its tail only.
    """
    if end - start <= len(data) - end:
        return end - start - data.count(b" ", start, end) - data.count(b"-", start, end)
    tail = len(data) - end
    return kept_after - (tail - data.count(b" ", end) - data.count(b"-", end))


def _toward(data: bytes, start: int, at: int, target: int, length: int) -> tuple[int, int]:
    """Move `start` toward where squeezed offset `target` lies in `data`, never past it.

    `at` is the squeezed offset of `start` and `length` that of the end.
    Each squeezed byte is at least one byte of `data`, so stepping by the
    gap never overshoots; the separators crossed leave a smaller gap for
    the next step.
    """
    for _ in range(_NARROWING_STEPS):
        gap = target - at
        if gap < _CLOSE_ENOUGH:
            break
        at += _kept(data, start, start + gap, length - at)
        start += gap
    return start, at


def _next_hit(screen: re.Pattern[bytes], squeezed: bytes, at: int) -> int:
    """The squeezed offset of `screen`'s first hit from `at` on; `len(squeezed)` if none."""
    hit = screen.search(squeezed, at)
    return len(squeezed) if hit is None else hit.start()


def find_card_number(data: bytes) -> int | None:
    """The byte offset of the first card number in `data`, or None."""
    squeezed = data.translate(_SQUEEZE, b" -")
    length = len(squeezed)
    ahead = [_next_hit(screen, squeezed, 0) for screen in _SCREENS]
    # Invariant: no card starts before `start`, and `at` is its squeezed offset.
    start = at = 0
    while True:
        # No screen hit between `at` and the nearest one: no card starts there either.
        target = min(ahead)
        if target == length:
            return None
        start, at = _toward(data, start, at, target, length)
        match = _CANDIDATE.search(data, start)
        if match is None:
            return None
        found = _card_in_match(data, match)
        if found is not None:
            return found
        at += _kept(data, start, match.end(), length - at)
        start = match.end()
        for index, hit in enumerate(ahead):
            if hit < at:
                ahead[index] = _next_hit(_SCREENS[index], squeezed, at)


def url_decoded(data: bytes) -> bytes:
    """`data` as a form or query decoder sees it: `+` is a space, `%XX` a byte."""
    return unquote_to_bytes(data.replace(b"+", b" "))


def may_be_encoded(data: bytes) -> bool:
    """True when URL-decoding could change `data` (it holds `+` or `%`)."""
    return b"%" in data or b"+" in data
