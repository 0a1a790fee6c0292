"""The card number scanner (SPEC §2.2): every card in any grouping, no timestamp or order id.

Besides the properties the guard promises, the scanner is compared with
`reference_offset`, the definition spelt out the slow way (every group
start, every window of whole groups): the fast scanner skips most of a
body on a squeezed copy and maps offsets back, and this is what shows the
skipping never skips a card or shifts an offset.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.security.pci import (
    BRANDS,
    LABEL_BYTES,
    find_card,
    find_card_number,
    in_brand_table,
    in_card_context,
    luhn_valid,
    mask_card_numbers,
    url_decoded,
)

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
    before=st.text('xyz {}":,.\n', max_size=20),
    after=st.text('xyz {}":,.\n', max_size=20),
)
def test_every_brand_card_in_any_grouping_is_found_at_its_offset(
    card: str, grouping: tuple[str, int], before: str, after: str
) -> None:
    # 17-19 digits count in a card context only: a card key right before them.
    label = '"card":"' if len(card) > 16 else ""
    text = grouped(card, *grouping)
    data = f"{before}{label}{text}{after}".encode()
    assert find_card_number(data) == len(f"{before}{label}".encode())


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


def test_a_phone_number_after_a_plus_and_a_decimal_fraction_are_no_card() -> None:
    visa13 = with_check_digit("491234567890")  # 13 digits from Visa's 4, Luhn-valid
    phone = f"+{visa13[:2]} {visa13[2:5]} {visa13[5:]}"  # +49 123 45678907
    assert find_card_number(f'{{"phone": "{phone}"}}'.encode()) is None
    assert find_card_number(f'{{"value": 950.{visa13}}}'.encode()) is None
    # Without the `+`, or without a digit before the `.`, they are card numbers.
    assert find_card_number(f'{{"phone": "{phone[1:]}"}}'.encode()) == 11
    assert find_card_number(f'{{"value": .{visa13}}}'.encode()) == 11


@pytest.mark.parametrize(
    "text",
    [
        '{"trace_id": "ff6d18257b5685a50cbb563477942160"}',  # 563477942160: a Maestro 56
        '{"id": "48640176-7472-0835-184d-c1a2b3c4d5e6"}',  # a UUID: 16 digits from 4
        "4111111111111111abc",
        "card4111111111111111",  # glued to a word ending in a-f: counted as a hex id
    ],
)
def test_digits_in_a_hex_id_or_uuid_are_no_card(text: str) -> None:
    assert find_card_number(text.encode()) is None


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("pan4111111111111111", 3),  # a letter after g is no hex digit
        ("4111 1111 1111 1111 exp 12/31", 0),
        ("\\n4111111111111111", 2),  # after a JSON escape
    ],
)
def test_a_card_next_to_other_letters_is_found(text: str, offset: int) -> None:
    assert find_card_number(text.encode()) == offset


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


# --- 17-19 digits: only in a card context ---

#: Luhn-valid, in a brand's range at a length it issues, 17-19 digits.
DISCORD_SNOWFLAKE = "658377835337406812"  # Discover's 65, 18 digits
LONG_DISCOVER = "6011000000000000001"  # 19 digits
LONG_UNIONPAY = "620000000000000005"  # 18 digits
LONG_VISA = "4539000000000000003"  # 19 digits


@pytest.mark.parametrize("number", [DISCORD_SNOWFLAKE, LONG_DISCOVER, LONG_UNIONPAY, LONG_VISA])
def test_the_long_numbers_used_below_are_brand_and_luhn_valid(number: str) -> None:
    assert textbook_brand(number) and textbook_luhn(number) and 17 <= len(number) <= 19


@pytest.mark.parametrize(
    "text",
    [
        '{"channel_id": "658377835337406812"}',  # issue 13: a Discord snowflake
        '{"guild_id":658377835337406812,"id":"6011000000000000001"}',
        '{"order_number": "6011000000000000001"}',  # `number`, but not alone
        '{"orderNumber":"6011 0000 0000 0000 001"}',
        "order-number=620000000000000005",
        "order number 4539000000000000003",  # free text, no card word
        '{"card":"tok_visa","ref":"4539000000000000003"}',  # the card key is another field's
        '{"cards": 2, "total": 1, "id": "658377835337406812"}',
        "/channels/658377835337406812/messages",
        '{"message":"shipped","tracking":"4539 0000 0000 0000 003"}',
    ],
)
def test_a_long_number_outside_a_card_context_passes(text: str) -> None:
    assert find_card_number(text.encode()) is None


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ('{"card": "6011000000000000001"}', LONG_DISCOVER),
        ('{"card":{"number":"6011 0000 0000 0000 001"}}', "6011 0000 0000 0000 001"),
        ('{"number": 658377835337406812}', DISCORD_SNOWFLAKE),  # `number` as the whole key
        ('{"pan":"620000000000000005"}', LONG_UNIONPAY),
        ('{"cc": "4539-0000-0000-0000-003"}', "4539-0000-0000-0000-003"),
        ('{"card_number": "4539000000000000003"}', LONG_VISA),
        ('{"cardNumber": "4539000000000000003"}', LONG_VISA),
        ('{"CCNumber": "4539000000000000003"}', LONG_VISA),
        ('{"ccnum": "4539000000000000003"}', LONG_VISA),
        ("amount=100&card[number]=6011000000000000001", LONG_DISCOVER),
        ("number=6011000000000000001&exp=12/30", LONG_DISCOVER),
        (
            '--b\r\nContent-Disposition: form-data; name="pan"\r\n\r\n620000000000000005',
            LONG_UNIONPAY,
        ),
        ("<card><number>6011000000000000001</number></card>", LONG_DISCOVER),
        ("please charge my card 4539 0000 0000 0000 003 today", "4539 0000 0000 0000 003"),
        ("Visa ending 4539000000000000003", LONG_VISA),
        ("/v1/cards/658377835337406812", DISCORD_SNOWFLAKE),
        ("x-card-number: 6011000000000000001", LONG_DISCOVER),
    ],
)
def test_a_long_number_in_a_card_context_is_found(text: str, number: str) -> None:
    assert find_card_number(text.encode()) == text.index(number)


def test_the_label_is_the_bytes_just_before_the_number_back_to_a_field_boundary() -> None:
    data = b'{"card": "' + LONG_VISA.encode() + b'"}'
    assert in_card_context(data, data.index(b"4539"))
    # Too far: more than LABEL_BYTES between the card word and the digits.
    far = b"card " + b"x" * LABEL_BYTES + b" " + LONG_VISA.encode()
    assert not in_card_context(far, far.index(b"4539"))
    assert find_card_number(far) is None
    # A field boundary (`,` `;` `&` `?` `{` `}`) between them ends the label.
    for boundary in b",;&?{}":
        cut = b"card " + bytes([boundary]) + b" " + LONG_VISA.encode()
        assert find_card_number(cut) is None, cut


def test_a_16_digit_card_needs_no_context_and_a_grouped_19_digit_run_holds_one() -> None:
    assert find_card_number(b'{"order_id":"4111111111111111"}') == 13
    # The first four groups of a 19-digit run are a 16-digit Visa: found without context.
    assert find_card_number(b"ref 4111 1111 1111 1111 003") == 4


def test_a_long_number_without_context_does_not_hide_a_card_after_it() -> None:
    data = f'{{"channel_id":"{DISCORD_SNOWFLAKE}","note":"4111 1111 1111 1111"}}'.encode()
    assert find_card_number(data) == data.index(b"4111")


# --- spans and masking ---


def test_find_card_gives_the_span_from_a_start() -> None:
    data = b"a 4111-1111-1111-1111 b 5555555555554444 c"
    assert find_card(data) == (2, 21)
    assert find_card(data, 21) == (24, 40)
    assert find_card(data, 40) is None


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("4111111111111111", "************1111"),
        ("card 4111 1111 1111 1111.", "card **** **** **** 1111."),
        ("a=4111-1111-1111-1111&b=378282246310005", "a=****-****-****-1111&b=***********0005"),
        ("order 1700000000123, +44 20 7946 0958", "order 1700000000123, +44 20 7946 0958"),
        ('{"channel_id":"658377835337406812"}', '{"channel_id":"658377835337406812"}'),
        ('{"card":"6011000000000000001"}', '{"card":"***************0001"}'),
        # Found only once URL-decoded: the digits' escapes are masked where they stand.
        ("pan=4111+1111+1111+1111", "pan=****+****+****+1111"),
        ("/p/4111%201111%201111%201111", "/p/****%20****%20****%201111"),
        ("/p/%34%31%311111111111111", "/p/************1111"),
    ],
)
def test_masking_keeps_the_last_four_digits_and_everything_else(text: str, masked: str) -> None:
    assert mask_card_numbers(text.encode()) == masked.encode()


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.deferred(lambda: pieces()), max_size=30))
def test_after_masking_no_card_is_left_raw_or_url_decoded(parts: list[str]) -> None:
    data = "".join(parts).encode()
    masked = mask_card_numbers(data)
    assert find_card_number(masked) is None
    assert find_card_number(url_decoded(masked)) is None
    # Only digits turn into `*`, and only where a card was.
    assert len(masked) == len(data) or b"%" in data
    if find_card_number(data) is None and find_card_number(url_decoded(data)) is None:
        assert masked == data


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


CARD_WORDS = {
    "card", "cards", "cardnumber", "cardno", "pan", "cc", "ccn", "ccnum", "ccnumber",
    "creditcard", "debitcard", "credit", "debit", "visa", "mastercard", "amex",
    "discover", "maestro", "unionpay", "jcb", "diners",
}  # fmt: skip


def textbook_context(text: str, start: int) -> bool:
    """The card-context rule read directly: the label, its words, a lone `number` key."""
    label = text[max(0, start - 32) : start]
    for boundary in ",;&?{}":
        label = label.rpartition(boundary)[2]
    words: list[str] = []
    word = ""
    for index, char in enumerate(label + " "):
        if "a" <= char.lower() <= "z" and char.isascii():
            # A capital after a small letter, or a capital before a small one
            # after capitals, starts a new word (camelCase, CCNumber).
            nxt = label[index + 1] if index + 1 < len(label) else ""
            if word and char.isupper() and (word[-1].islower() or nxt.islower()):
                words.append(word)
                word = ""
            word += char
        elif word:
            words.append(word)
            word = ""
    if any(w.lower() in CARD_WORDS for w in words):
        return True
    stripped = label.rstrip("\"'\\ :=>]\r\n\t")
    if not stripped.lower().endswith("number") or len(label) - len(stripped) > 6:
        return False
    before = stripped[:-6][-1:]
    return before == "" or not (before.isascii() and (before.isalnum() or before in "_ .-\t"))


def textbook_in_hex_id(text: str, start: int, end: int) -> bool:
    """A letter a-f touches the number, or the digit group next to it across a separator."""
    return bool(
        re.search(r"[A-Fa-f](?:[0-9]+[ -])?$", text[:start])
        or re.match(r"(?:[ -][0-9]+)?[A-Fa-f]", text[end:])
    )


def reference_offset(data: bytes) -> int | None:
    """The first offset where a card number starts, found the slow way.

    A card starts a digit group (no digit before it, nor a `+`, nor a `.`
    after a digit) and spans whole groups
    joined by one kind of single separator, 12-19 digits in all, in the
    brand table and passing Luhn, not part of a hex id; 17-19 digits only
    in a card context.
    """
    text = data.decode("latin-1")
    for start, char in enumerate(text):
        if char not in DIGITS or (start and text[start - 1] in DIGITS + "+"):
            continue
        if start > 1 and text[start - 1] == "." and text[start - 2] in DIGITS:
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
                    if textbook_in_hex_id(text, start, end):
                        pass
                    elif len(digits) <= 16 or textbook_context(text, start):
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
        st.sampled_from(
            [" ", "-", "  ", " -", "--", '"', ",", "x", "\n", "+", "%20", "é", ".", "d", "-2d"]
        ),
        # Labels: card contexts and near ones, for the 17-19 digit rule.
        st.sampled_from(
            ['"card":"', "pan=", '{"number": ', "number=", "card[number]=", "cardNumber ",
             "order_number=", "orderNumber:", " number ", "ccNum", "Visa ", "&", ";", "{",
             "channel_id=", "discard "]
        ),
        st.sampled_from([LONG_DISCOVER, LONG_UNIONPAY, LONG_VISA, DISCORD_SNOWFLAKE]),
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
