"""What an LLM call costs, in USD (SPEC §10, "Usage and cost").

Prices come from `genai-prices` (pydantic's maintained price data, MIT),
not from a table kept here, with the config's `[llm.prices."provider/model"]`
overrides first. The package computes the cost itself where no override
applies, so its tiered prices (e.g. above 200k input tokens) and cache
prices (Anthropic: cache reads 0.1x, 5-minute cache writes 1.25x of input;
OpenAI: cached input discounted) are applied as the provider bills them.

Offline by construction: the package fetches newer prices only from its
`UpdatePrices` background thread (genai_prices/update_prices.py, the one
place it makes an HTTP request), which this module never starts; it prices
from the data bundled with the installed version.

Loading that data (and pydantic) takes ~0.4 s and ~14 MB, so it happens at
the first lookup that needs it, or at `PriceBook.warm()`, which a sidecar
with LLM endpoints calls at start-up off the event loop. Lookups are
memoized (bounded: a client choosing the model name must not grow memory).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypeVar

from sidecar.llm.usage import Usage

_MILLION = Decimal(1_000_000)
#: Lookups remembered (hits and misses); the oldest is forgotten first.
MEMO_ENTRIES = 1024
#: A model name longer than this is looked up each time, never remembered.
_LONGEST_MEMO_KEY = 200
_FIELDS = ("input", "output", "cache_read", "cache_write")
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. A cache price of None bills those tokens at the input price."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None


FREE = Price(Decimal(0), Decimal(0), Decimal(0), Decimal(0))


def parse_price_overrides(table: Mapping[str, Any]) -> dict[str, Price]:
    """The `[llm.prices."provider/model"]` tables of the config, by "provider/model".

    Each has `input` and `output` (USD per million tokens, required) and may
    have `cache_read` and `cache_write`; `"free"` in place of a table is
    FREE. Raises ValueError naming the bad key or value.
    """
    prices: dict[str, Price] = {}
    for key, entry in table.items():
        provider, slash, model = str(key).partition("/")
        if not slash or not provider or not model:
            raise ValueError(f'llm.prices: {key!r} is not "provider/model" (e.g. "openai/gpt-4o")')
        if entry == "free":
            prices[_key(provider, model)] = FREE
            continue
        if not isinstance(entry, Mapping):
            raise ValueError(f'llm.prices."{key}": expected a table of USD per million tokens')
        unknown = sorted(set(entry) - set(_FIELDS))
        if unknown:
            raise ValueError(
                f'llm.prices."{key}": unknown key {unknown[0]!r} (known: {", ".join(_FIELDS)})'
            )
        for required in ("input", "output"):
            if required not in entry:
                raise ValueError(
                    f'llm.prices."{key}": {required} is required (USD per million tokens)'
                )
        values = {
            name: _usd_per_million(key, name, entry[name]) for name in _FIELDS if name in entry
        }
        prices[_key(provider, model)] = Price(**values)
    return prices


def _usd_per_million(key: str, name: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f'llm.prices."{key}".{name}: {value!r} is not a number')
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f'llm.prices."{key}".{name}: {value!r} is not a number') from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f'llm.prices."{key}".{name}: {value!r} must be a finite number >= 0')
    return amount


def _key(provider: str, model: str) -> str:
    return f"{provider.lower()}/{model.lower()}"


@dataclass(frozen=True, slots=True)
class _Known:
    """A model genai-prices knows: its base prices and what computes its cost."""

    price: Price
    model: Any  # genai_prices.types.ModelInfo
    provider: Any  # genai_prices.types.Provider
    #: No tiers and no per-request fee: the cost is `_cost_at(price, usage)`,
    #: ~100 times cheaper than the package's calculation (which is on every
    #: LLM call's path, twice).
    flat: bool = False


class PriceBook:
    """Prices and costs by provider and model: config overrides, then genai-prices."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._overrides = {key.lower(): price for key, price in (overrides or {}).items()}
        self._memo: dict[tuple[str, str], _Known | None] = {}
        self._url_memo: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Load the bundled price data now (blocking, ~0.4 s), not at the first call."""
        _snapshot()

    def provider_for_url(self, url: str) -> str | None:
        """The genai-prices provider id serving this endpoint URL; None when none matches.

        An `openai`-format endpoint may be Groq, Mistral, Together, …: their
        models are priced under their own id (`https://api.groq.com/openai`
        gives "groq"), by the API URL patterns the package keeps. A local
        server (Ollama, vLLM) matches none: use its format's id or an
        override.
        """
        try:
            return self._url_memo[url]
        except KeyError:
            pass
        found = next(
            (
                provider.id
                for provider in _snapshot().providers
                if re.match(provider.api_pattern, url)
            ),
            None,
        )
        self._remember(self._url_memo, url, found, len(url))
        return found

    def price(self, provider: str, model: str) -> Price | None:
        """The model's prices (USD per million tokens); None when neither source knows it."""
        override = self._overrides.get(_key(provider, model))
        if override is not None:
            return override
        known = self._known(provider, model)
        return known.price if known is not None else None

    def cost(self, provider: str, model: str, usage: Usage) -> Decimal | None:
        """What the call cost in USD; None when its price is unknown."""
        override = self._overrides.get(_key(provider, model))
        if override is not None:
            return _cost_at(override, usage)
        known = self._known(provider, model)
        if known is None:
            return None
        if known.flat:
            return _cost_at(known.price, usage)
        computed = _calc(known, usage)
        return computed if computed is not None else _cost_at(known.price, usage)

    def worst_case(
        self, provider: str, model: str, input_tokens: int, max_output_tokens: int
    ) -> Decimal | None:
        """The most a call can cost: all input at the input price, the cap at the output price."""
        usage = Usage(input=max(0, input_tokens), output=max(0, max_output_tokens))
        return self.cost(provider, model, usage)

    def _known(self, provider: str, model: str) -> _Known | None:
        key = (provider.lower(), model.lower())
        try:
            return self._memo[key]
        except KeyError:
            pass
        known = _look_up(*key)
        self._remember(self._memo, key, known, len(model))
        return known

    def _remember(self, memo: dict[K, V], key: K, value: V, length: int) -> None:
        """Keep a lookup, the oldest forgotten first; one for a huge name never."""
        if length > _LONGEST_MEMO_KEY:
            return
        with self._lock:
            if len(memo) >= MEMO_ENTRIES:
                del memo[next(iter(memo))]
            memo[key] = value


def _snapshot() -> Any:
    # Imported here: the package and pydantic cost ~14 MB, paid only by a
    # sidecar that prices LLM calls. get_snapshot() is the bundled data
    # unless something in the process started UpdatePrices (nothing here does).
    from genai_prices import data_snapshot

    return data_snapshot.get_snapshot()


def _look_up(provider_id: str, model: str) -> _Known | None:
    """genai-prices' model for this provider id (its own fallbacks included), without its caches.

    The package's DataSnapshot caches every model name it is asked about,
    without a bound; the provider and model are found here with the same
    functions, and the bounded memo above remembers them instead.
    """
    from datetime import UTC, datetime

    from genai_prices.data_snapshot import find_provider_by_id

    snapshot = _snapshot()
    provider = find_provider_by_id(snapshot.providers, provider_id)
    if provider is None:
        return None
    info = provider.find_model(model, all_providers=snapshot.providers)
    if info is None:
        return None
    prices = info.get_prices(datetime.now(tz=UTC))
    base_input = _base(prices.input_mtok)
    base_output = _base(prices.output_mtok)
    if base_input is None or base_output is None:
        return None
    price = Price(
        input=base_input,
        output=base_output,
        cache_read=_base(prices.cache_read_mtok),
        cache_write=_base(prices.cache_write_mtok),
    )
    flat = getattr(prices, "requests_kcount", None) is None and all(
        isinstance(getattr(prices, name, None), Decimal | None)
        for name in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
    )
    return _Known(price=price, model=info, provider=provider, flat=flat)


def _base(value: Any) -> Decimal | None:
    """A price's value below any tier (a TieredPrices has a `base`)."""
    if value is None:
        return None
    base = getattr(value, "base", value)
    return base if isinstance(base, Decimal) else None


def _calc(known: _Known, usage: Usage) -> Decimal | None:
    """genai-prices' own calculation (tiers, cache prices); None if it refuses the figures."""
    from genai_prices import Usage as GenaiUsage

    figures = GenaiUsage(
        input_tokens=usage.input,
        output_tokens=usage.output,
        cache_read_tokens=usage.cache_read,
        cache_write_tokens=usage.cache_write,
    )
    try:
        result = known.model.calc_price(figures, known.provider)
    except (ValueError, ArithmeticError):
        return None
    total = result.total_price
    return total if isinstance(total, Decimal) else None


def _cost_at(price: Price, usage: Usage) -> Decimal:
    """The cost of `usage` at flat prices: uncached input, cache reads and writes, output."""
    cache_read = min(usage.cache_read, usage.input)
    cache_write = min(usage.cache_write, usage.input - cache_read)
    uncached = usage.input - cache_read - cache_write
    total = (
        uncached * price.input
        + cache_read * (price.cache_read if price.cache_read is not None else price.input)
        + cache_write * (price.cache_write if price.cache_write is not None else price.input)
        + usage.output * price.output
    )
    return total / _MILLION


def format_usd(amount: Decimal) -> str:
    """`X-LLM-Cost`'s value: plain decimal, no exponent, at most 10 places, no trailing zeros.

    `Decimal("0.000842000")` gives `0.000842`; zero gives `0`.
    """
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {amount}")
    rounded = amount.quantize(Decimal("1e-10"), rounding=ROUND_HALF_UP)
    text = format(rounded, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text
