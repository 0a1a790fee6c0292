"""The card number scanner (SPEC §2.2): every card in any grouping, no timestamp or order id.

Besides the properties the guard promises, the scanner is compared with
`reference_offset`, the definition spelt out the slow way (every group
start, every window of whole groups): the fast scanner skips most of a
body on a squeezed copy and maps offsets back, and this is what shows the
skipping never skips a card or shifts an offset.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.pci import BRANDS, find_card_number, in_brand_table, luhn_valid, url_decoded

# Test numbers the brands publish for sandboxes.
TEST_CARDS = [
    "4111111111111111",  # Visa
    "4012888888881881",  # Visa
    "4222222222222",  # Visa, 13 digits
    "5555555555554444",  # Mastercard
    "2223003122003222",  # Mastercard 2-series
    "378282246310005",  # American Express
    "371449635398431",  # American Express
    "6011111111111117",  # Discover
    "30569309025904",  # Diners Club
    "3566002020360505",  # JCB
    "6200000000000005",  # UnionPay
    "6759649826438453",  # Maestro
]

DIGITS = "0123456789"


def with_check_digit(partial: str) -> str:
    """`partial` plus the digit that makes it pass Luhn."""
    for digit in DIGITS:
        if luhn_valid((partial + digit).encode()):
            return partial + digit
    raise AssertionError("unreachable: one of ten digits always completes Luhn")


@st.composite
def brand_cards(draw: st.DrawFn) -> str:
    """A Luhn-valid number inside some brand's prefix range, at a length it issues."""
    first, last, lengths = draw(st.sampled_from(BRANDS))
    prefix = str(draw(st.integers(int(first), int(last)))).zfill(len(first))
    length = draw(st.sampled_from(sorted(lengths)))
    body = draw(
        st.text(DIGITS, min_size=length - len(prefix) - 1, max_size=length - len(prefix) - 1)
    )
    return with_check_digit(prefix + body)


def grouped(number: str, separator: str, size: int) -> str:
    """`number` in groups of `size` digits joined by `separator` (nothing: plain)."""
    if not separator:
        return number
    return separator.join(number[i : i + size] for i in range(0, len(number), size))


@pytest.mark.parametrize("card", TEST_CARDS)
@pytest.mark.parametrize(("separator", "size"), [("", 4), (" ", 4), ("-", 4), (" ", 3)])
def test_published_test_cards_are_found_plain_and_grouped(
    card: str, separator: str, size: int
) -> None:
    text = grouped(card, separator, size)
    body = f'{{"note":"pay","card":"{text}","n":12}}'.encode()
    assert find_card_number(body) == body.index(text.encode())


@settings(max_examples=300, deadline=None)
@given(
    card=brand_cards(),
    grouping=st.sampled_from([("", 4), (" ", 4), ("-", 4), (" ", 5), ("-", 3), (" ", 6)]),
    before=st.text('abc {}":,.\n', max_size=20),
    after=st.text('abc {}":,.\n', max_size=20),
)
def test_every_brand_card_in_any_grouping_is_found_at_its_offset(
    card: str, grouping: tuple[str, int], before: str, after: str
) -> None:
    text = grouped(card, *grouping)
    data = f"{before}{text}{after}".encode()
    assert find_card_number(data) == len(before.encode())


@settings(max_examples=300, deadline=None)
@given(first=st.sampled_from("01789"), rest=st.text(DIGITS, min_size=10, max_size=17))
def test_luhn_valid_runs_outside_the_brand_table_pass(first: str, rest: str) -> None:
    number = with_check_digit(first + rest)
    data = f'{{"id":"{number}","n":{number}}}'.encode()
    assert find_card_number(data) is None


@settings(max_examples=300, deadline=None)
@given(
    digits=st.text("01789", min_size=11, max_size=18),
    grouping=st.sampled_from([(" ", 4), ("-", 4), (" ", 3), ("-", 5)]),
)
def test_grouped_luhn_valid_runs_outside_the_brand_table_pass(
    digits: str, grouping: tuple[str, int]
) -> None:
    # Every group starts outside the table, so no window of whole groups is a card
    # either (a grouped run is also tried from each of its groups).
    number = with_check_digit(digits)
    assert find_card_number(grouped(number, *grouping).encode()) is None


@pytest.mark.parametrize(
    "text",
    [
        '{"created":1700000000000,"ts":1700000000123}',  # ms timestamps
        '{"phone":"+44 20 7946 0958","tel":"+1 415-555-2671"}',
        '{"order":"7000000000000000002"}',
        "4111111111111111111111",  # a card's digits inside a longer number
        "x4111111111111112",  # Visa-looking, fails Luhn
        "4111  1111 1111 1111",  # a double space is no grouping
        "4111 1111-1111 1111",  # nor are mixed separators
        "2800000000000007",  # 2-series outside Mastercard's 2221-2720
        "41111111111111110",  # Visa prefix, Luhn-valid, but 17 digits
    ],
)
def test_numbers_that_are_not_cards_pass(text: str) -> None:
    assert find_card_number(text.encode()) is None


def test_the_first_card_is_reported_when_there_are_several() -> None:
    data = b"a=5555555555554444&b=4111111111111111"
    assert find_card_number(data) == 2


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("ref 12 4111 1111 1111 1111", 7),  # a short number before the card
        ("4111 1111 1111 1111 2031", 0),  # an expiry year after it
        ("1400 4111-1111-1111-1111", 5),  # the run starts with a non-brand digit
        ("1-2 4111 1111 1111 1111", 4),  # mixed separators around the card
    ],
)
def test_a_card_next_to_other_numbers_is_found(text: str, offset: int) -> None:
    assert find_card_number(text.encode()) == offset


def test_binary_and_multipart_bodies_are_scanned() -> None:
    multipart = (
        b'--b\r\nContent-Disposition: form-data; name="f"; filename="x.bin"\r\n\r\n'
        + bytes(range(256))
        + b'\r\n--b\r\nContent-Disposition: form-data; name="pan"\r\n\r\n'
        + b"378282246310005\r\n--b--\r\n"
    )
    assert find_card_number(multipart) == multipart.index(b"378282246310005")
    assert find_card_number(bytes(range(256)) * 64) is None


def test_the_brand_table_checks_lengths() -> None:
    assert in_brand_table(b"378282246310005")
    assert not in_brand_table(b"3782822463100050")  # Amex is 15 digits only
    assert not in_brand_table(b"1700000000000")


# --- the scanner against the definition, spelt out slowly ---


def textbook_luhn(digits: str) -> bool:
    """Luhn as it is usually written: double every second digit from the right."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def textbook_brand(digits: str) -> bool:
    """BRANDS read directly: a prefix range, compared on its own digits, and a length."""
    return any(
        int(first) <= int(digits[: len(first)]) <= int(last) and len(digits) in lengths
        for first, last, lengths in BRANDS
    )


def reference_offset(data: bytes) -> int | None:
    """The first offset where a card number starts, found the slow way.

    A card starts a digit group (no digit before it) and spans whole groups
    joined by one kind of single separator, 12-19 digits in all, in the
    brand table and passing Luhn.
    """
    text = data.decode("latin-1")
    for start, char in enumerate(text):
        if char not in DIGITS or (start and text[start - 1] in DIGITS):
            continue
        for separator in " -":
            digits, at = "", start
            while True:
                end = at
                while end < len(text) and text[end] in DIGITS:
                    end += 1
                digits += text[at:end]
                if len(digits) > 19:
                    break
                if len(digits) >= 12 and textbook_brand(digits) and textbook_luhn(digits):
                    return start
                if end + 1 < len(text) and text[end] == separator and text[end + 1] in DIGITS:
                    at = end + 1
                else:
                    break
    return None


#: Numbers the screen lets through (a brand digit, 13-19 digits) that fail Luhn.
NEAR_MISSES = ["4000123412341235,", "5555-5555-5555-4445 ", "4000 1234 1234 1235"]


def pieces() -> st.SearchStrategy[str]:
    """Bits of a body: cards in any grouping, digit runs, separators, other bytes."""
    grouping = st.tuples(st.sampled_from(["", " ", "-"]), st.integers(1, 7))
    return st.one_of(
        st.builds(lambda card, g: grouped(card, *g), st.sampled_from(TEST_CARDS), grouping),
        st.builds(lambda card, g: grouped(card, *g), brand_cards(), grouping),
        st.text(DIGITS, min_size=1, max_size=22),
        # Near misses: the screen lets them through, the check turns them down.
        st.sampled_from([*NEAR_MISSES, "44 20 7946 0958"]),
        st.sampled_from([" ", "-", "  ", " -", "--", '"', ",", "x", "\n", "+", "%20", "é"]),
    )


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(pieces(), max_size=40))
def test_the_scanner_finds_what_the_definition_finds(parts: list[str]) -> None:
    data = "".join(parts).encode()
    assert find_card_number(data) == reference_offset(data)


@settings(max_examples=100, deadline=None)
@given(
    filler=st.sampled_from(["word ", "1 ", "- ", "12-34 ", "+44 20 7946 0958,", *NEAR_MISSES]),
    times=st.integers(0, 3000),
    card=st.sampled_from(TEST_CARDS),
    separator=st.sampled_from(["", " ", "-"]),
)
def test_the_offset_is_right_after_a_long_run_of_separators_and_near_misses(
    filler: str, times: int, card: str, separator: str
) -> None:
    # Many separators before the card: the squeezed offset is far from the real one.
    before = (filler * times).encode()
    data = before + b"<" + grouped(card, separator, 4).encode() + b"> " + before
    assert find_card_number(data) == len(before) + 1


def test_luhn_matches_the_textbook_on_every_length() -> None:
    numbers = [str(n).zfill(width) for width in range(1, 20) for n in range(0, 10**6, 9973)]
    for number in numbers:
        assert luhn_valid(number.encode()) == textbook_luhn(number), number


def test_the_brand_table_matches_its_ranges_for_every_prefix_and_length() -> None:
    for length in range(11, 21):
        for prefix in range(10000):
            digits = str(prefix).zfill(4).ljust(length, "0")
            assert in_brand_table(digits.encode()) == textbook_brand(digits), digits


def test_url_decoding_turns_a_form_grouping_into_spaces() -> None:
    assert url_decoded(b"pan=4111+1111%201111%2D1111") == b"pan=4111 1111 1111-1111"
    assert find_card_number(url_decoded(b"pan=4111+1111+1111+1111")) == 4
