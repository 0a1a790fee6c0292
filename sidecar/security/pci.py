"""Finding payment card numbers (PANs) in bytes, for the PCI guard (SPEC §2.2).

A card number here is a run of 12-19 digits, plain or grouped by one kind
of single separator (`4111 1111 1111 1111`, `4111-1111-1111-1111`), that
passes Luhn *and* starts with a prefix of a card brand at a length that
brand issues (`BRANDS`). Luhn alone would flag one random digit run in
ten: millisecond timestamps, order ids, phone numbers. A card starts a
digit group (the byte before it is no digit) and spans whole groups: a
group of more than 19 digits is no card, real card numbers are delimited.

Runs of 17-19 digits count only in a card context (`in_card_context`):
18-19 digit ids (Discord and Twitter snowflakes, order numbers) are
everywhere, and one in ten with a brand's prefix passes Luhn, while
nearly every card in use has 16 digits or fewer. The context is the
number's *label*: the `LABEL_BYTES` before it, back to the last field
boundary (`,` `;` `&` `?` `{` `}`). It is a card context when a word in it
(letters, camelCase split) is a card word (`CARD_WORDS`: `card`, `pan`,
`cc`, `visa`...), or when the label is a key named `number` on its own
(`{"number": `, `number=`, `card[number]=`; not `order_number`, not
"order number"). The label is read only for a 17-19 digit run that already
passed the brand table and Luhn, so it costs nothing on the common path.

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
from collections.abc import Callable
from functools import partial
from urllib.parse import unquote_to_bytes

_SEPARATOR = re.compile(rb"([ -])")

MIN_DIGITS = 12
MAX_DIGITS = 19
#: Longer runs count as card numbers only in a card context.
MAX_DIGITS_WITHOUT_CONTEXT = 16
#: How far before a 17-19 digit run its label reaches, at most.
LABEL_BYTES = 32

#: Words that make a label a card context (lower case; `number` is a rule of its own).
CARD_WORDS = frozenset(
    {
        "card",
        "cards",
        "cardnumber",
        "cardno",
        "pan",
        "cc",
        "ccn",
        "ccnum",
        "ccnumber",
        "creditcard",
        "debitcard",
        "credit",
        "debit",
        "visa",
        "mastercard",
        "amex",
        "discover",
        "maestro",
        "unionpay",
        "jcb",
        "diners",
    }
)
_CARD_WORD_BYTES = frozenset(word.encode() for word in CARD_WORDS)
#: A label ends at the last of these: they end a JSON member, a form or query pair.
_FIELD_BOUNDARY = re.compile(rb"[,;&?{}]")
#: Words: runs of ASCII letters, camelCase split (`cardNumber`, `CCNumber`).
_WORD = re.compile(rb"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
#: A key named `number` on its own, then only quotes, `:`, `=`, `>`, `]`,
#: blanks: not part of a longer name (`order_number`, `orderNumber`) or phrase.
_NUMBER_KEY = re.compile(rb"(?:^|[^A-Za-z0-9_ .\t-])number[\"'\\ :=>\]\r\n\t]{0,6}$", re.IGNORECASE)

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
    """True when the plain digit string `digits` is a plausible card number.

    For 17-19 digits that is not enough: they also need a card context.
    """
    return MIN_DIGITS <= len(digits) <= MAX_DIGITS and in_brand_table(digits) and luhn_valid(digits)


def in_card_context(data: bytes, start: int) -> bool:
    """True when the number at `data[start]` has a card label (see the module doc)."""
    label = _FIELD_BOUNDARY.split(data[max(0, start - LABEL_BYTES) : start])[-1]
    if any(word.lower() in _CARD_WORD_BYTES for word in _WORD.findall(label)):
        return True
    return _NUMBER_KEY.search(label) is not None


#: Told (start, end, digits) of a brand- and Luhn-valid window, in run offsets:
#: whether it is a card number where it stands (`_counts`).
Fits = Callable[[int, int, int], bool]
Span = tuple[int, int]


def _first_window(groups: list[bytes], remaining: int, fits: Fits) -> Span | None:
    """The span in the run of the first card number, or None.

    `groups` are the digit groups of a run joined by one kind of
    single-byte separator, in order (empty where two separators meet),
    `remaining` their digits in all. A window extends over whole, non-empty
    groups.
    """
    offset = 0
    for first, group in enumerate(groups):
        if remaining < MIN_DIGITS:
            return None
        remaining -= len(group)
        start = offset
        offset += len(group) + 1
        if not group or group[0] not in _BRAND_FIRST_DIGITS:
            continue
        digits = group
        following = first + 1
        end = offset - 1
        while len(digits) <= MAX_DIGITS:
            if (
                len(digits) >= MIN_DIGITS
                and is_card_number(digits)
                and fits(start, end, len(digits))
            ):
                return start, end
            if following == len(groups) or not groups[following]:
                break
            digits += groups[following]
            end += 1 + len(groups[following])
            following += 1
    return None


def _card_in_run(run: bytes, fits: Fits) -> Span | None:
    """The span in `run` (a candidate match) of the first card number, or None."""
    if run.isdigit():
        found = is_card_number(run) and fits(0, len(run), len(run))
        return (0, len(run)) if found else None
    has_space = b" " in run
    if has_space and b"-" in run:
        return _mixed_run(run, fits)
    groups = run.split(b" " if has_space else b"-")
    return _first_window(groups, len(run) - len(groups) + 1, fits)


def _shifted(fits: Fits, by: int, start: int, end: int, digits: int) -> bool:
    """`fits` for a window that starts `by` bytes into the run."""
    return fits(by + start, by + end, digits)


def _mixed_run(run: bytes, fits: Fits) -> Span | None:
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
        found = _first_window(window, sum(map(len, window)), partial(_shifted, fits, offset))
        if found is not None and found[0] == 0:
            return offset, offset + found[1]
        offset += len(groups[first]) + 1
    return None


def _no_card_after(data: bytes, start: int) -> bool:
    """True when no card number can start at `data[start]` (> 0) for what is before it.

    A digit (the group began earlier), a `+` (a phone number in E.164
    form, `+49 716 28697326`), or a `.` after a digit (a decimal fraction,
    `950.5025808127049`).
    """
    before = data[start - 1]
    if before in _DIGITS or before == _PLUS:
        return True
    return before == _DOT and start > 1 and data[start - 2] in _DIGITS


_PLUS = ord("+")
_DOT = ord(".")


def _card_in_match(data: bytes, match: re.Match[bytes]) -> Span | None:
    """The span in `data` of the first card number in the `_CANDIDATE` match, or None."""
    start = match.start()
    run = match.group()
    if start and _no_card_after(data, start):
        # Begun inside a group (one whose first digit starts no brand, or
        # one before where the search began, where no card starts), or a
        # group no card starts (a phone number's, a decimal fraction's):
        # only the groups after it can start a card number.
        cut = min((i for i in (run.find(b" "), run.find(b"-")) if i >= 0), default=-1)
        if cut < 0:
            return None
        start += cut + 1
        run = run[cut + 1 :]
    found = _card_in_run(run, partial(_counts_at, data, start))
    return None if found is None else (start + found[0], start + found[1])


def _counts_at(data: bytes, at: int, start: int, end: int, digits: int) -> bool:
    """`_counts` for a window of a run that starts at `data[at]`."""
    return _counts(data, at + start, at + end, digits)


def _counts(data: bytes, start: int, end: int, digits: int) -> bool:
    """Whether the brand- and Luhn-valid `digits`-digit number at `data[start:end]` is a card.

    Not when glued to a hexadecimal id (`_in_hex_id`); 17-19 digits only in
    a card context.
    """
    if _in_hex_id(data, start, end):
        return False
    return digits <= MAX_DIGITS_WITHOUT_CONTEXT or in_card_context(data, start)


_HEX_LETTERS = frozenset(b"abcdefABCDEF")
_SEPARATORS = frozenset(b" -")


def _in_hex_id(data: bytes, start: int, end: int) -> bool:
    """True when the number at `data[start:end]` is part of a hex id or a UUID.

    That is: a letter a-f touches it, or touches the digit group next to it
    across one separator (`...a50cbb563477942160`, a UUID's
    `48640176-7472-0835-184d-...`). Only asked about a number that passed
    the brand table and Luhn, so its cost does not matter.
    """
    before = start - 1
    if before > 0 and data[before] in _SEPARATORS and data[before - 1] in _DIGITS:
        while before > 0 and data[before - 1] in _DIGITS:
            before -= 1
        before -= 1
    if before >= 0 and data[before] in _HEX_LETTERS:
        return True
    after = end
    if after + 1 < len(data) and data[after] in _SEPARATORS and data[after + 1] in _DIGITS:
        after += 1
        while after < len(data) and data[after] in _DIGITS:
            after += 1
    return after < len(data) and data[after] in _HEX_LETTERS


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


#: Up to this size, a text is first looked at for a run long enough to hold
#: a card (a second pass, so not worth it on a large body).
_SHORT = 512
#: Digits, spaces and dashes to `0`, the rest to `x`: a card lies in a run of
#: `_TWELVE` (more than needed, as spaces alone count too, but one C call).
_RUN_TABLE = bytes(ord("0") if byte in b"0123456789 -" else ord("x") for byte in range(256))
_TWELVE = b"0" * MIN_DIGITS


def find_card_number(data: bytes) -> int | None:
    """The byte offset of the first card number in `data`, or None."""
    found = find_card(data)
    return None if found is None else found[0]


def find_card(data: bytes, start: int = 0) -> Span | None:
    """(start, end) of the first card number in `data` that starts at `start` or later.

    `start` is 0 or the end of a card found before (never inside a group).
    """
    if len(data) <= _SHORT and _TWELVE not in data.translate(_RUN_TABLE):
        # A path, headers, a small query: two C calls say no run is long enough.
        return None
    squeezed = data.translate(_SQUEEZE, b" -")
    length = len(squeezed)
    # Invariant: no card starts before `start`, and `at` is its squeezed offset.
    at = start - data.count(b" ", 0, start) - data.count(b"-", 0, start) if start else 0
    ahead = [_next_hit(screen, squeezed, at) for screen in _SCREENS]
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


def card_spans(data: bytes) -> list[Span]:
    """The (start, end) of every card number in `data`, in order."""
    spans: list[Span] = []
    found = find_card(data)
    while found is not None:
        spans.append(found)
        found = find_card(data, found[1])
    return spans


def _masked(out: bytes, text: bytes, places: list[Span] | None) -> bytes:
    """`out` with each card number in `text` masked but for its own last four digits.

    `places[i]` is where in `out` the byte `text[i]` is spelt (None: `text`
    is `out`); each masked digit becomes one `*` there.
    """
    masked: list[int] = []
    for start, end in card_spans(text):
        digits = [i for i in range(start, end) if text[i] in _DIGITS]
        masked.extend(digits[:-4])
    if not masked:
        return out
    result = bytearray(out)
    # Right to left, so an escape turned into one `*` moves none still to do.
    for index in reversed(masked):
        begin, end = (index, index + 1) if places is None else places[index]
        result[begin:end] = b"*"
    return bytes(result)


def mask_card_numbers(data: bytes) -> bytes:
    """`data` with every card number's digits but its last four turned into `*`.

    As sent and, where `+` or `%` could hide one, URL-decoded: there the
    bytes that spell a digit (`%34` or `4`) become one `*` where they
    stand, so the result decodes to a masked number too. Everything else
    (separators included) is kept as it was. Masking can make a new card
    (a `*` before a digit that was inside a group now starts one), so it
    goes on until a pass finds none.
    """
    while True:
        masked = _masked(data, data, None)
        if may_be_encoded(masked):
            decoded, places = _decoded_with_places(masked)
            masked = _masked(masked, decoded, places)
        if masked == data:
            return masked
        data = masked


def _decoded_with_places(data: bytes) -> tuple[bytes, list[Span]]:
    """`url_decoded(data)` and, per decoded byte, the (start, end) of the bytes that spell it."""
    decoded = bytearray()
    places: list[Span] = []
    index = 0
    while index < len(data):
        byte = data[index]
        if byte == ord("%") and _HEX.fullmatch(data, index + 1, index + 3):
            decoded.append(int(data[index + 1 : index + 3], 16))
            places.append((index, index + 3))
            index += 3
            continue
        decoded.append(ord(" ") if byte == ord("+") else byte)
        places.append((index, index + 1))
        index += 1
    return bytes(decoded), places


_HEX = re.compile(rb"[0-9A-Fa-f]{2}")


def text_bytes(text: str) -> bytes:
    """A path, query or header value (str) as the bytes to scan.

    The edge decodes them as latin-1, so this gives back the bytes as
    received and offsets count bytes; text that is no latin-1 is scanned
    as UTF-8 (digits are ASCII either way).
    """
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def has_card_number(data: bytes) -> bool:
    """True when `data` holds a card number as it is or URL-decoded."""
    if find_card_number(data) is not None:
        return True
    return may_be_encoded(data) and find_card_number(url_decoded(data)) is not None


def mask_text(text: str) -> str:
    """`mask_card_numbers` for text: `text` itself when it holds no card number."""
    try:
        data, codec = text.encode("latin-1"), "latin-1"
    except UnicodeEncodeError:
        data, codec = text.encode("utf-8", "surrogatepass"), "utf-8"
    masked = mask_card_numbers(data)
    return text if masked == data else masked.decode(codec, "surrogatepass")


def percent_decoded(data: bytes) -> bytes:
    """`data` as a path or header is read: `%XX` a byte, `+` a plus."""
    return unquote_to_bytes(data) if b"%" in data else data


def url_decoded(data: bytes) -> bytes:
    """`data` as a form or query decoder sees it: `+` is a space, `%XX` a byte."""
    return unquote_to_bytes(data.replace(b"+", b" "))


def may_be_encoded(data: bytes) -> bool:
    """True when URL-decoding could change `data` (it holds `+` or `%`)."""
    return b"%" in data or b"+" in data
