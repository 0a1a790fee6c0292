"""The card number scanner (SPEC §2.2): every card in any grouping, no timestamp or order id."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.pci import BRANDS, find_card_number, in_brand_table, luhn_valid

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
