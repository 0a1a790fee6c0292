"""The pure parts of LLM budgets: scopes, the UTC day, USD <-> nano-USD, X-LLM-Budget."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.llm.budgets import (
    CallBudget,
    check_day,
    day_end,
    nano_to_usd,
    oldest_kept_day,
    parse_call_budget,
    parse_scope,
    previous_day,
    scopes_for,
    seconds_to_rollover,
    usd_text,
    usd_to_nano,
    utc_day,
)

DAY = 86_400


@pytest.mark.parametrize("scope", ["all", "route:chat", "key:0123456789ab", "route:a.b-c_d"])
def test_a_valid_scope_is_kept_as_given(scope: str) -> None:
    assert parse_scope(scope) == scope
    assert parse_scope(f"  {scope} ") == scope


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not one of route:NAME, key:ID or all"),
        ("ALL", "is not one of"),
        ("routes:chat", "is not one of"),
        ("route:", "has no route name"),
        ("key:", "has no client key id"),
        ("route:a b", "printable ASCII without spaces"),
        ("key:\u00e9", "printable ASCII without spaces"),
    ],
)
def test_a_bad_scope_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scope(text)


def test_a_call_counts_against_all_its_route_and_its_key() -> None:
    assert scopes_for("chat", "0123456789ab") == ("all", "route:chat", "key:0123456789ab")
    assert scopes_for(None, "0123456789ab") == ("all", "key:0123456789ab")
    # A loopback caller without a key has no key scope.
    assert scopes_for("chat", "local") == ("all", "route:chat")
    assert scopes_for(None, "local") == ("all",)


def test_the_day_is_utc_and_rolls_over_at_midnight() -> None:
    midnight = 20_000 * DAY
    assert utc_day(midnight - 1) == "2024-10-03"
    assert utc_day(midnight) == "2024-10-04"
    assert seconds_to_rollover(midnight) == DAY
    assert seconds_to_rollover(midnight - 0.25) == 1  # never 0: a Retry-After of 0 invites a loop
    assert seconds_to_rollover(midnight - 90.5) == 91
    assert day_end("2024-10-03") == midnight
    assert previous_day("2024-03-01") == "2024-02-29"
    assert oldest_kept_day(midnight) == "2024-09-02"  # 32 days kept


@pytest.mark.parametrize("day", ["2024-13-01", "2024-02-30", "24-01-01", "2024-1-01", "today"])
def test_a_bad_day_is_refused(day: str) -> None:
    with pytest.raises(ValueError, match="day"):
        check_day(day)


def test_usd_becomes_nano_usd_rounded_up() -> None:
    assert usd_to_nano(Decimal("0.05")) == 50_000_000
    assert usd_to_nano(Decimal("0.0000000001")) == 1  # a reservation never undershoots
    assert usd_to_nano(Decimal("0.0000000019")) == 2
    assert usd_to_nano(Decimal("2.5")) == 2_500_000_000
    assert nano_to_usd(842_000) == Decimal("0.000842")
    assert usd_text(1) == "0.000000001"
    assert usd_text(100_000_000_000) == "100"
    assert usd_text(0) == "0"


@given(st.integers(min_value=0, max_value=10**15))
def test_nano_usd_round_trips_through_usd(nano: int) -> None:
    assert usd_to_nano(nano_to_usd(nano)) == nano
    assert usd_to_nano(Decimal(usd_text(nano))) == nano


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.05", CallBudget(50_000_000, False)),
        (" 0.05 ", CallBudget(50_000_000, False)),
        ("0.05; clamp", CallBudget(50_000_000, True)),
        ("1;CLAMP", CallBudget(1_000_000_000, True)),
        (".5", CallBudget(500_000_000, False)),
    ],
)
def test_x_llm_budget_is_usd_with_an_optional_clamp(value: str, expected: CallBudget) -> None:
    assert parse_call_budget(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "not a decimal amount of USD"),
        ("cheap", "not a decimal amount of USD"),
        ("1e-3", "not a decimal amount of USD"),
        ("-0.05", "not a decimal amount of USD"),
        ("NaN", "not a decimal amount of USD"),
        ("0", "above zero"),
        ("0.05; squeeze", "is not 'clamp'"),
        ("0.05;", "is not 'clamp'"),
        ("0.0000000001", "more than 9 decimal places"),
        ("5000000", "above the most allowed"),
    ],
)
def test_a_bad_x_llm_budget_says_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_call_budget(value)
    assert "X-LLM-Budget" in str(raised.value)
