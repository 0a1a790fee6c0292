"""Prices from genai-prices (offline), config overrides, costs with cache tokens, USD text."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from decimal import Decimal
from typing import Any

import pytest

from sidecar.llm.prices import (
    FREE,
    MEMO_ENTRIES,
    Price,
    PriceBook,
    format_usd,
    parse_price_overrides,
)
from sidecar.llm.usage import Usage

D = Decimal


@pytest.fixture(scope="module")
def book() -> PriceBook:
    prices = PriceBook()
    prices.warm()
    return prices


# USD per million tokens as the providers publish them (openai.com/api/pricing,
# anthropic.com/pricing): input, output, cached input read, 5-minute cache write.
@pytest.mark.parametrize(
    ("provider", "model", "published"),
    [
        ("openai", "gpt-4o", Price(D("2.5"), D("10"), D("1.25"), None)),
        ("openai", "gpt-4o-2024-08-06", Price(D("2.5"), D("10"), D("1.25"), None)),
        ("openai", "gpt-4o-mini", Price(D("0.15"), D("0.6"), D("0.075"), None)),
        ("anthropic", "claude-3-5-haiku-20241022", Price(D("0.8"), D("4"), D("0.08"), D("1"))),
        ("anthropic", "claude-sonnet-4-20250514", Price(D("3"), D("15"), D("0.3"), D("3.75"))),
        ("anthropic", "claude-haiku-4-5", Price(D("1"), D("5"), D("0.1"), D("1.25"))),
        ("anthropic", "claude-haiku-4-5-20251001", Price(D("1"), D("5"), D("0.1"), D("1.25"))),
    ],
)
def test_published_prices(book: PriceBook, provider: str, model: str, published: Price) -> None:
    assert book.price(provider, model) == published


def test_anthropic_cache_tokens_cost_as_anthropic_bills_them(book: PriceBook) -> None:
    # claude-haiku-4-5: $1 input, cache read 0.1x ($0.10), 5-minute cache write
    # 1.25x ($1.25), $5 output.
    usage = Usage(input=200 + 3000 + 1000, output=350, cache_read=3000, cache_write=1000)
    expected = (200 * D(1) + 3000 * D("0.1") + 1000 * D("1.25") + 350 * D(5)) / 1_000_000
    assert book.cost("anthropic", "claude-haiku-4-5", usage) == expected == D("0.0035")


def test_openai_cached_input_is_discounted(book: PriceBook) -> None:
    # gpt-4o: 200 uncached at $2.50, 1000 cached at $1.25, 350 out at $10 -> 0.00525.
    assert book.cost("openai", "gpt-4o", Usage(1200, 350, 1000, 0)) == D("0.00525")
    assert book.cost("openai", "gpt-4o-mini", Usage(1_000_000, 1_000_000)) == D("0.75")


def test_long_context_tier(book: PriceBook) -> None:
    # claude-sonnet-4-5 above 200k input tokens: $6 input and $22.50 output for the whole call.
    assert book.worst_case("anthropic", "claude-sonnet-4-5", 1000, 1000) == D("0.018")
    assert book.worst_case("anthropic", "claude-sonnet-4-5", 300_000, 1000) == D("1.8225")


def test_worst_case_is_input_plus_the_output_cap(book: PriceBook) -> None:
    assert book.worst_case("openai", "gpt-4o", 4000, 4096) == (4000 * D("2.5") + 4096 * 10) / 10**6


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "my-finetune-xyz"), ("anthropic", "gpt-4o"), ("nobody", "gpt-4o")],
)
def test_unknown_prices(book: PriceBook, provider: str, model: str) -> None:
    assert book.price(provider, model) is None
    assert book.cost(provider, model, Usage(10, 10)) is None
    assert book.worst_case(provider, model, 10, 10) is None


@pytest.mark.parametrize(
    ("url", "provider"),
    [
        ("https://api.openai.com", "openai"),
        ("https://api.anthropic.com", "anthropic"),
        ("https://api.groq.com/openai", "groq"),
        ("https://api.mistral.ai", "mistral"),
        ("http://127.0.0.1:11434", None),
    ],
)
def test_provider_for_url(book: PriceBook, url: str, provider: str | None) -> None:
    assert book.provider_for_url(url) == provider


def test_an_openai_compatible_provider_is_priced_under_its_own_id(book: PriceBook) -> None:
    # Groq's published llama-3.1-8b-instant: $0.05 input, $0.08 output.
    provider = book.provider_for_url("https://api.groq.com/openai")
    assert provider == "groq"
    assert book.price(provider, "llama-3.1-8b-instant") == Price(D("0.05"), D("0.08"))
    assert book.price("openai", "llama-3.1-8b-instant") is None


def test_overrides_come_first() -> None:
    overrides = parse_price_overrides(
        {
            "openai/gpt-4o": {"input": 2, "output": 8},
            "ollama/llama3.1": "free",
            "groq/llama-3.1-8b-instant": {
                "input": 0.05,
                "output": "0.08",
                "cache_read": 0.025,
                "cache_write": 0,
            },
        }
    )
    book = PriceBook(overrides)
    assert book.price("openai", "GPT-4o") == Price(D(2), D(8))
    # No cache price in the override: cached tokens at the input price.
    assert book.cost("openai", "gpt-4o", Usage(1200, 350, 1000, 0)) == D("0.0052")
    assert book.cost("ollama", "llama3.1", Usage(10**6, 10**6)) == 0
    assert book.price("ollama", "llama3.1") == FREE
    groq = Usage(input=4000, output=1000, cache_read=2000, cache_write=1000)
    expected = (1000 * D("0.05") + 2000 * D("0.025") + 1000 * D("0.08")) / 10**6
    assert book.cost("groq", "llama-3.1-8b-instant", groq) == expected
    assert book.worst_case("groq", "llama-3.1-8b-instant", 10**6, 10**6) == D("0.13")


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"gpt-4o": {"input": 1, "output": 1}}, "'gpt-4o'"),
        ({"openai/": {"input": 1, "output": 1}}, "'openai/'"),
        ({"openai/gpt-4o": {"input": 1}}, "output is required"),
        ({"openai/gpt-4o": {"input": 1, "output": 1, "cached": 1}}, "'cached'"),
        ({"openai/gpt-4o": {"input": -1, "output": 1}}, "input: -1"),
        ({"openai/gpt-4o": {"input": "cheap", "output": 1}}, "input: 'cheap'"),
        ({"openai/gpt-4o": {"input": True, "output": 1}}, "input: True"),
        ({"openai/gpt-4o": {"input": float("nan"), "output": 1}}, "input: nan"),
        ({"openai/gpt-4o": 3}, '"openai/gpt-4o"'),
    ],
)
def test_bad_overrides_name_the_key_and_value(table: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=r"llm\.prices") as raised:
        parse_price_overrides(table)
    assert named in str(raised.value)


def test_lookups_are_remembered_within_a_bound(book: PriceBook) -> None:
    prices = PriceBook()
    for index in range(MEMO_ENTRIES + 50):
        assert prices.price("openai", f"made-up-model-{index}") is None
    assert prices.price("openai", "x" * 10_000) is None
    assert len(prices._memo) == MEMO_ENTRIES
    assert prices.price("openai", "gpt-4o") == book.price("openai", "gpt-4o")


def test_prices_work_with_the_network_unavailable() -> None:
    # A fresh interpreter where every connection and name lookup fails and is
    # recorded: importing, warming and pricing must attempt neither, and no
    # genai-prices update thread may start.
    script = textwrap.dedent(
        """
        import socket, threading
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(args[:2])
            raise OSError("network unavailable in this test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        from sidecar.llm.prices import PriceBook
        from sidecar.llm.usage import Usage
        book = PriceBook()
        book.warm()
        cost = book.cost("anthropic", "claude-haiku-4-5", Usage(4200, 350, 3000, 1000))
        from decimal import Decimal
        assert cost == Decimal("0.0035"), cost
        assert book.price("openai", "gpt-4o") is not None
        assert attempts == [], attempts
        names = [thread.name for thread in threading.enumerate()]
        assert not any("genai_prices" in name for name in names), names
        import genai_prices.update_prices as updates
        assert updates._shared_updater.thread is None
        print("offline ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "offline ok"


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (D("0.000842"), "0.000842"),
        (D("0.00052500"), "0.000525"),
        (D("0.00525"), "0.00525"),
        (D(0), "0"),
        (D("0E-12"), "0"),
        (D("1.50"), "1.5"),
        (D("12"), "12"),
        (D("1E+2"), "100"),
        (D("7.5E-8"), "0.000000075"),
        (D("0.00000000004"), "0"),
        (D("0.00000000005"), "0.0000000001"),
    ],
)
def test_format_usd(amount: Decimal, text: str) -> None:
    assert format_usd(amount) == text


def test_format_usd_refuses_what_is_not_an_amount() -> None:
    with pytest.raises(ValueError):
        format_usd(D("NaN"))
