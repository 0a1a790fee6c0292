"""LLM budgets through the sidecar (SPEC §10 "Budgets", issue 17).

The worst case is reserved before the call, so concurrent calls cannot
spend past a budget; refusals come in the client's own error format.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import openai
import pytest

from sidecar.llm.budgets import usd_to_nano
from tests.llm.conftest import Gateway
from tests.llm.test_calls import MESSAGES, openai_route

#: What one call's worst case is at the test price: its body's bytes / 4 input
#: tokens at 2.5 and 100 output tokens at 10, USD per million; about 0.00105.
ONE_CALL = Decimal("0.00105")


async def test_concurrent_calls_cannot_overspend_a_budget(gateway: Gateway) -> None:
    client = await openai_route(gateway)
    # Room for two worst cases, not three.
    await gateway.app.store.set_budget("route:chat", usd_to_nano(ONE_CALL * Decimal("2.5")))

    async def call(number: int) -> object:
        # Each its own prompt: identical concurrent POSTs would share one
        # upstream call (the computed idempotency key, SPEC §2.3).
        prompt = [{"role": "user", "content": f"Say hello {number}"}]
        try:
            return await client.chat.completions.create(
                model="gpt-test",
                messages=prompt,
                max_tokens=100,  # type: ignore[arg-type]
            )
        except openai.RateLimitError as refused:
            return refused

    outcomes = await asyncio.gather(*(call(n) for n in range(6)))
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert 1 <= 6 - len(refused) <= 2
    assert len(gateway.openai.calls) == 6 - len(refused)
    first = refused[0]
    assert first.code == "llm_budget_exhausted"
    assert int(first.response.headers["retry-after"]) > 0
    assert first.response.headers["x-should-retry"] == "false"


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
    await gateway.app.store.set_budget("all", usd_to_nano(Decimal(5)))
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model="mystery-model-7", messages=MESSAGES)  # type: ignore[arg-type]
    assert raised.value.code == "llm_price_unknown"
