"""LLM budgets through the sidecar (SPEC §10 "Budgets", issue 17).

The worst case is reserved before the call, so concurrent calls cannot
spend past a budget; refusals come in the client's own error format.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from sidecar.llm.budgets import usd_to_nano
from tests.llm.conftest import Gateway, knows_budget, llm_sidecar, set_budget
from tests.llm.providers import OpenAIProvider, serving
from tests.llm.test_calls import MESSAGES, openai_route
from tests.support.servers import serving as serving_sidecar

#: One call at gpt-budget's price: 50 output tokens (what the fake answers,
#: and the max_tokens asked) at 10 USD per million; input is free.
ONE_CALL_USD = Decimal("0.0005")


async def _budget_calls(urls: list[str], count: int) -> list[object]:
    """`count` concurrent calls, spread over the sidecars at `urls`, each its own prompt."""
    clients = [
        openai.AsyncOpenAI(base_url=f"{url}/r/chat/v1", api_key="x", max_retries=0) for url in urls
    ]

    async def call(number: int) -> object:
        # Each its own prompt: identical concurrent POSTs would share one
        # upstream call (the computed idempotency key, SPEC §2.3).
        prompt = [{"role": "user", "content": f"Say hello {number}"}]
        try:
            return await clients[number % len(clients)].chat.completions.create(
                model="gpt-budget",
                messages=prompt,
                max_tokens=50,  # type: ignore[arg-type]
            )
        except openai.RateLimitError as refused:
            return refused

    return await asyncio.gather(*(call(n) for n in range(count)))


def _served_five_exactly(outcomes: list[object]) -> list[openai.RateLimitError]:
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert 4 <= len(outcomes) - len(refused) <= 6  # five, +-1 for rounding
    for error in refused:
        assert error.code == "llm_budget_exhausted"
        assert int(error.response.headers["retry-after"]) > 0
        assert error.response.headers["x-should-retry"] == "false"
    return refused


async def test_twenty_concurrent_calls_on_a_budget_for_five_serve_five(
    gateway: Gateway,
) -> None:
    await openai_route(gateway)
    await set_budget(gateway.app, "route:chat", usd_to_nano(ONE_CALL_USD * 5))
    outcomes = await _budget_calls([gateway.url], 20)
    refused = _served_five_exactly(outcomes)
    assert len(gateway.openai.calls) == 20 - len(refused)
    await gateway.app.llm.drain()
    (row,) = await gateway.app.store.spend(scope="route:chat")
    assert row.reserved_nano == 0  # nothing is left reserved
    assert row.spent_nano == usd_to_nano(ONE_CALL_USD) * (20 - len(refused))


async def test_two_sidecars_on_one_redis_share_a_budget(tmp_path: Path, redis_url: str) -> None:
    first = llm_sidecar(tmp_path / "a", redis=redis_url)
    second = llm_sidecar(tmp_path / "b", redis=redis_url)
    async with (
        serving(OpenAIProvider(), "127.0.0.2") as provider,
        serving_sidecar(first) as first_url,
        serving_sidecar(second) as second_url,
    ):
        gateway = Gateway(first_url, first, provider, provider, None, None)  # type: ignore[arg-type]
        await openai_route(gateway)
        await second.routes.refresh()
        await set_budget(first, "route:chat", usd_to_nano(ONE_CALL_USD * 5))
        await knows_budget(second, "route:chat")
        outcomes = await _budget_calls([first_url, second_url], 20)
        refused = _served_five_exactly(outcomes)
        assert len(provider.calls) == 20 - len(refused)
        await first.llm.drain()
        await second.llm.drain()
        (row,) = await first.store.spend(scope="route:chat")
        assert row.reserved_nano == 0
        assert row.requests == 20 - len(refused)


async def test_spend_is_recorded_per_scope(gateway: Gateway) -> None:
    client = await openai_route(gateway)
    await client.chat.completions.create(model="gpt-test", messages=MESSAGES)  # type: ignore[arg-type]
    await gateway.app.llm.drain()
    rows = {row.scope: row for row in await gateway.app.store.spend()}
    assert rows["route:chat"].requests == 1
    assert rows["route:chat"].spent_nano == usd_to_nano(Decimal("0.00275"))
    assert rows["route:chat"].input_tokens == 1000
    assert rows["all"].output_tokens == 50


async def test_a_call_budget_refuses_a_call_whose_worst_case_is_over_it(
    gateway: Gateway,
) -> None:
    client = await openai_route(gateway)
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(
            model="gpt-test",
            messages=MESSAGES,
            max_tokens=1000,  # type: ignore[arg-type]
            extra_headers={"X-LLM-Budget": "0.001"},
        )
    assert raised.value.code == "llm_budget_exceeded"
    assert gateway.openai.calls == []


async def test_a_clamped_call_budget_lowers_max_tokens_to_fit(gateway: Gateway) -> None:
    client = await openai_route(gateway)
    await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        max_tokens=1000,  # type: ignore[arg-type]
        extra_headers={"X-LLM-Budget": "0.001; clamp"},
    )
    sent = gateway.openai.calls[-1].json["max_tokens"]
    # 0.001 USD less the input's share, at 10 USD per million output tokens.
    assert 80 <= sent < 100


async def test_a_model_without_a_price_is_refused_where_a_budget_applies(
    gateway: Gateway,
) -> None:
    client = await openai_route(gateway)
    # No budget: it goes through, unmetered (no cost header).
    raw = await client.chat.completions.with_raw_response.create(
        model="mystery-model-7",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert "x-llm-cost" not in raw.headers
    assert raw.headers["x-llm-usage"].startswith("input=1000")
    await set_budget(gateway.app, "all", usd_to_nano(Decimal(5)))
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model="mystery-model-7", messages=MESSAGES)  # type: ignore[arg-type]
    assert raised.value.code == "llm_price_unknown"
