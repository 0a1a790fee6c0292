"""Cross-provider failover with the official SDKs (SPEC §10, issue 18).

An OpenAI-format call answered by Anthropic and the mirror image, plain
and streamed, tool calls included; what cannot be expressed on the other
side skips that endpoint instead of being changed.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from tests.llm.conftest import Gateway
from tests.llm.providers import TOOL_INPUT, status

MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
OPENAI_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ANTHROPIC_TOOLS: list[Any] = [
    {
        "name": "weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


async def openai_to_anthropic(gateway: Gateway) -> openai.AsyncOpenAI:
    """Route `mixed`: OpenAI first, then Anthropic with a model map."""
    await gateway.routes(f"""
[routes.mixed]
[[routes.mixed.endpoints]]
url = "{gateway.openai.url}"
provider = "openai"
[[routes.mixed.endpoints]]
url = "{gateway.anthropic.url}"
provider = "anthropic"
model_map = {{ "gpt-test" = "claude-test" }}
""")
    return openai.AsyncOpenAI(
        base_url=f"{gateway.url}/r/mixed/v1",
        api_key="placeholder",
        max_retries=0,
        http_client=gateway.http(),
    )


async def anthropic_to_openai(gateway: Gateway) -> anthropic.AsyncAnthropic:
    await gateway.routes(f"""
[routes.mixed]
[[routes.mixed.endpoints]]
url = "{gateway.anthropic.url}"
provider = "anthropic"
[[routes.mixed.endpoints]]
url = "{gateway.openai.url}"
provider = "openai"
model = "gpt-test"
""")
    return anthropic.AsyncAnthropic(
        base_url=f"{gateway.url}/r/mixed",
        api_key="placeholder",
        max_retries=0,
        http_client=gateway.http(),
    )


async def test_an_openai_call_is_answered_by_anthropic(gateway: Gateway) -> None:
    client = await openai_to_anthropic(gateway)
    gateway.openai.plan(status(529, "overloaded_error"))
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=MESSAGES,
        max_tokens=200,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 1000
    assert raw.headers["x-rescued"] == "cascade_fallback"
    assert raw.headers["x-llm-provider"] == "anthropic"
    assert raw.headers["x-llm-model"] == "claude-test"
    assert raw.headers["x-llm-cost"] == "0.00321"  # Anthropic's price, not OpenAI's
    sent = gateway.anthropic.calls[-1]
    assert sent.path == "/v1/messages"
    assert sent.json["model"] == "claude-test" and sent.json["max_tokens"] == 200
    assert sent.headers["anthropic-version"] == "2023-06-01"


async def test_an_openai_tool_call_crosses_with_json_arguments_plain_and_streamed(
    gateway: Gateway,
) -> None:
    client = await openai_to_anthropic(gateway)
    gateway.openai.plan(status(529, "overloaded_error"), status(529, "overloaded_error"))
    completion = await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        tools=OPENAI_TOOLS,  # type: ignore[arg-type]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name) == ("toolu_1", "weather")  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == TOOL_INPUT  # type: ignore[union-attr]

    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        tools=OPENAI_TOOLS,
        stream=True,  # type: ignore[arg-type]
    )
    arguments, finish = "", None
    async for chunk in stream:
        for choice_delta in chunk.choices:
            for delta in choice_delta.delta.tool_calls or []:
                assert delta.index == 0
                arguments += (delta.function.arguments or "") if delta.function else ""
            finish = choice_delta.finish_reason or finish
    assert json.loads(arguments) == TOOL_INPUT
    assert finish == "tool_calls"


async def test_a_multi_turn_tool_conversation_crosses_with_ids_preserved(
    gateway: Gateway,
) -> None:
    client = await openai_to_anthropic(gateway)
    gateway.openai.plan(status(503, "server_error"))
    conversation: list[Any] = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "sunny, 21C"},
    ]
    completion = await client.chat.completions.create(
        model="gpt-test",
        messages=conversation,
        tools=OPENAI_TOOLS,  # type: ignore[arg-type]
    )
    assert completion.choices[0].message.content == "Hello there"
    sent = gateway.anthropic.calls[-1].json["messages"]
    assert sent[1]["content"][0] == {
        "type": "tool_use",
        "id": "call_9",
        "name": "weather",
        "input": {"city": "Paris"},
    }
    result = sent[2]["content"][0]
    assert (result["type"], result["tool_use_id"]) == ("tool_result", "call_9")


async def test_an_anthropic_call_is_answered_by_openai_plain_and_streamed(
    gateway: Gateway,
) -> None:
    client = await anthropic_to_openai(gateway)
    gateway.anthropic.plan(status(529, "overloaded_error"), status(529, "overloaded_error"))
    raw = await client.messages.with_raw_response.create(
        model="claude-test",
        max_tokens=100,
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    message = await raw.parse()
    assert message.content[0].text == "Hello there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert raw.headers["x-rescued"] == "cascade_fallback"
    assert raw.headers["x-llm-provider"] == "openai"
    assert gateway.openai.calls[-1].path == "/v1/chat/completions"
    async with client.messages.stream(
        model="claude-test",
        max_tokens=100,
        messages=MESSAGES,  # type: ignore[arg-type]
    ) as stream:
        assert await stream.get_final_text() == "Hello there"


async def test_an_anthropic_tool_use_crosses_from_openai(gateway: Gateway) -> None:
    client = await anthropic_to_openai(gateway)
    gateway.anthropic.plan(status(529, "overloaded_error"))
    message = await client.messages.create(
        model="claude-test",
        max_tokens=100,
        messages=MESSAGES,
        tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.input == TOOL_INPUT  # type: ignore[union-attr]
    assert block.id == "call_1"  # type: ignore[union-attr]


async def test_a_call_with_n_2_is_not_sent_to_anthropic(gateway: Gateway) -> None:
    client = await openai_to_anthropic(gateway)
    gateway.openai.plan(status(529, "overloaded_error"))
    with pytest.raises(openai.InternalServerError) as raised:
        await client.chat.completions.create(
            model="gpt-test",
            messages=MESSAGES,
            n=2,  # type: ignore[arg-type]
        )
    # The client gets the last real failure; Anthropic never saw the call.
    assert raised.value.status_code == 529
    assert gateway.anthropic.calls == []
    await gateway.app.events.flush()
    events = [json.loads(d) for _, d in await gateway.app.store.events_read(None, 50)]
    assert any(e["kind"] == "llm_untranslatable" and e.get("detail") == "n" for e in events), events


async def test_an_endpoint_with_no_model_for_the_call_is_skipped(gateway: Gateway) -> None:
    client = await openai_to_anthropic(gateway)
    gateway.openai.plan(status(529, "overloaded_error"))
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(
            model="gpt-other",
            messages=MESSAGES,  # type: ignore[arg-type]
        )
    assert gateway.anthropic.calls == []
