"""The real-client proof: the `openai` and `anthropic` SDKs, talking to a stand-in for
the sidecar that answers each from a recorded upstream of the *other* format through
the translators. Each SDK parses what we produce with its own code: its response
models, its SSE decoder, its stream accumulators and its error classes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from sidecar.llm.translate import (
    StreamToAnthropic,
    StreamToOpenAI,
    error_to_anthropic,
    error_to_openai,
    request_to_anthropic,
    request_to_openai,
    response_to_anthropic,
    response_to_openai,
    translated_path,
)
from tests.sidecar.llm.translate.wire import (
    anthropic_events,
    assert_anthropic_request,
    assert_openai_request,
    load,
    openai_chunks,
)

WEATHER_TOOL_OPENAI: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_TOOL_ANTHROPIC: Any = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}

Reply = tuple[int, str, bytes]  # status, content type, body
# A stand-in for the sidecar: the path and body the SDK sent -> the reply.
Handler = Callable[[str, bytes], Reply]


def sse(frames: list[bytes]) -> Reply:
    return 200, "text/event-stream", b"".join(frames)


def as_json(status: int, body: dict[str, Any]) -> Reply:
    return status, "application/json", json.dumps(body).encode()


def mock_http(http: Any, handler: Handler) -> Any:
    """An http client of `http` (httpx, or anthropic 2.x's fork httpx2) answered by handler."""

    def transport(request: Any) -> Any:
        status, kind, content = handler(request.url.path, request.content)
        return http.Response(status, headers={"content-type": kind}, content=content)

    return http.Client(transport=http.MockTransport(transport))


def openai_client(handler: Handler) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://sidecar.test/v1",
        http_client=mock_http(httpx, handler),
        max_retries=0,
    )


def anthropic_client(handler: Handler) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url="http://sidecar.test",
        http_client=mock_http(httpx2, handler),
        max_retries=0,
    )


class AnthropicUpstream:
    """Answers OpenAI-format calls from recorded Anthropic answers, as the sidecar would."""

    def __init__(
        self,
        message: str = "anthropic_message_tool_use.json",
        stream: str = "anthropic_stream_text_and_tools.sse",
    ) -> None:
        self.message = message
        self.stream = stream
        self.sent: list[dict[str, Any]] = []

    def __call__(self, path: str, content: bytes) -> Reply:
        assert translated_path(path, "anthropic") == "/v1/messages"
        body = json.loads(content)
        upstream = request_to_anthropic(body, model="claude-haiku-4-5", default_max_tokens=1024)
        assert_anthropic_request(upstream)
        self.sent.append(upstream)
        if not body.get("stream"):
            return as_json(200, response_to_openai(load(self.message), model=body["model"]))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = StreamToOpenAI(body["model"], "chatcmpl-x", include_usage)
        frames: list[bytes] = []
        for event, data in anthropic_events(self.stream):
            frames += translator.feed(event, data)
        return sse(frames)


class OpenAIUpstream:
    """Answers Anthropic-format calls from recorded OpenAI answers, as the sidecar would."""

    def __init__(self, stream: str = "openai_stream_text_and_tools.sse") -> None:
        self.stream = stream
        self.sent: list[dict[str, Any]] = []

    def __call__(self, path: str, content: bytes) -> Reply:
        assert translated_path(path, "openai") == "/v1/chat/completions"
        body = json.loads(content)
        upstream = request_to_openai(body, model="gpt-4o-mini")
        assert_openai_request(upstream)
        self.sent.append(upstream)
        if not body.get("stream"):
            answer = response_to_anthropic(
                load("openai_completion_tool_calls.json"), model=body["model"]
            )
            return as_json(200, answer)
        translator = StreamToAnthropic(body["model"], "msg_x")
        frames: list[bytes] = []
        for chunk in openai_chunks(self.stream):
            frames += translator.feed(chunk)
        return sse(frames + translator.finish())


QUESTION: Any = [{"role": "user", "content": "Weather in Paris and Oslo?"}]


# -- the openai SDK, answered by Anthropic -----------------------------------


def test_openai_sdk_reads_a_translated_completion() -> None:
    upstream = AnthropicUpstream()
    client = openai_client(upstream)
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=QUESTION, tools=[WEATHER_TOOL_OPENAI], temperature=0.2
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll look up both cities."
    calls = choice.message.tool_calls or []
    assert [c.id for c in calls] == [
        "toolu_01A09q90qw90lq917835lq9",
        "toolu_01B19r91rx91mr928946mr0",
    ]
    assert [json.loads(c.function.arguments) for c in calls if c.type == "function"] == [
        {"city": "Paris"},
        {"city": "Oslo", "unit": "celsius"},
    ]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 2025
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 1900
    assert upstream.sent[0]["temperature"] == 0.2
    assert upstream.sent[0]["max_tokens"] == 1024


def test_openai_sdk_streams_a_translated_stream() -> None:
    client = openai_client(AnthropicUpstream())
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=QUESTION,
        tools=[WEATHER_TOOL_OPENAI],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    arguments: dict[int, str] = {}
    ids: dict[int, str] = {}
    finish = None
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                if call.id:
                    ids[call.index] = call.id
                arguments[call.index] = arguments.get(call.index, "") + (
                    (call.function.arguments if call.function else None) or ""
                )

    assert text == "Okay, let's check the weather in both cities:"
    assert finish == "tool_calls"
    assert ids == {0: "toolu_01T1x1fJ34qAmk2tNTrN7Up6", 1: "toolu_01Vz2bGJdMfg4tHqfRkCRvPk"}
    assert json.loads(arguments[1]) == {"city": "Oslo", "unit": "celsius"}
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (600, 89)


def test_openai_sdk_stream_helper_accumulates_the_translated_stream() -> None:
    client = openai_client(AnthropicUpstream())
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=QUESTION, tools=[WEATHER_TOOL_OPENAI]
    ) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Okay, let's check the weather in both cities:"
    assert [json.loads(c.function.arguments) for c in message.tool_calls or []] == [
        {"city": "Paris"},
        {"city": "Oslo", "unit": "celsius"},
    ]
    assert final.choices[0].finish_reason == "tool_calls"


def test_openai_sdk_raises_its_own_error_for_a_translated_anthropic_error() -> None:
    def overloaded(path: str, content: bytes) -> Reply:
        return as_json(529, error_to_openai(529, load("anthropic_error_overloaded.json")))

    with pytest.raises(openai.InternalServerError) as raised:
        openai_client(overloaded).chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert raised.value.status_code == 529
    assert raised.value.code == "overloaded"
    assert "Overloaded" in raised.value.message


def test_openai_sdk_raises_on_a_translated_in_band_stream_error() -> None:
    client = openai_client(AnthropicUpstream(stream="anthropic_stream_overloaded.sse"))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
    with pytest.raises(openai.APIError) as raised:
        for _ in stream:
            pass
    assert raised.value.message == "Overloaded"


# -- the anthropic SDK, answered by OpenAI -----------------------------------


def test_anthropic_sdk_reads_a_translated_message() -> None:
    upstream = OpenAIUpstream()
    message = anthropic_client(upstream).messages.create(
        model="claude-haiku-4-5",
        max_tokens=300,
        system="Be brief.",
        messages=QUESTION,
        tools=[WEATHER_TOOL_ANTHROPIC],
        tool_choice={"type": "any"},
    )
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "text"
    tool_uses = [block for block in message.content if block.type == "tool_use"]
    assert [(b.id, b.input) for b in tool_uses] == [
        ("call_paris_01", {"city": "Paris"}),
        ("call_oslo_02", {"city": "Oslo", "unit": "celsius"}),
    ]
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (86, 1920)
    sent = upstream.sent[0]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["tool_choice"] == "required"
    assert sent["max_completion_tokens"] == 300


@pytest.mark.parametrize(
    "recording", ["openai_stream_text_and_tools.sse", "openai_stream_interleaved_tools.sse"]
)
def test_anthropic_sdk_stream_accumulates_the_translated_stream(recording: str) -> None:
    upstream = OpenAIUpstream(stream=recording)
    with anthropic_client(upstream).messages.stream(
        model="claude-haiku-4-5", max_tokens=300, messages=QUESTION, tools=[WEATHER_TOOL_ANTHROPIC]
    ) as stream:
        message = stream.get_final_message()
    assert upstream.sent[0]["stream_options"] == {"include_usage": True}
    assert message.stop_reason == "tool_use"
    inputs = [block.input for block in message.content if block.type == "tool_use"]
    if recording == "openai_stream_text_and_tools.sse":
        assert message.content[0].type == "text"
        assert message.content[0].text == "Checking both cities."
        assert inputs == [{"city": "Paris"}, {"city": "Oslo", "unit": "celsius"}]
        assert (message.usage.input_tokens, message.usage.output_tokens) == (86, 52)
        assert message.usage.cache_read_input_tokens == 1920
    else:
        assert inputs == [{"city": "Paris"}, {"zone": "Europe/Oslo"}]


def test_anthropic_sdk_get_final_text_of_a_translated_stream() -> None:
    def plain(path: str, content: bytes) -> Reply:
        translator = StreamToAnthropic("claude-haiku-4-5", "msg_1")
        frames: list[bytes] = []
        for piece in ("Bonjour", ", ", "Paris!"):
            frames += translator.feed(
                {"id": "c", "choices": [{"index": 0, "delta": {"content": piece}}]}
            )
        frames += translator.feed(
            {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        )
        return sse(frames + translator.finish())

    with anthropic_client(plain).messages.stream(
        model="claude-haiku-4-5", max_tokens=50, messages=QUESTION
    ) as stream:
        assert stream.get_final_text() == "Bonjour, Paris!"


def test_anthropic_sdk_raises_its_own_error_for_a_translated_openai_error() -> None:
    def limited(path: str, content: bytes) -> Reply:
        return as_json(429, error_to_anthropic(429, load("openai_error_rate_limit.json")))

    with pytest.raises(anthropic.RateLimitError) as raised:
        anthropic_client(limited).messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=QUESTION
        )
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["type"] == "rate_limit_error"


def test_anthropic_sdk_raises_on_a_translated_in_band_stream_error() -> None:
    def failing(path: str, content: bytes) -> Reply:
        translator = StreamToAnthropic("claude-haiku-4-5", "msg_1")
        frames = translator.feed({"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}}]})
        frames += translator.feed(
            {"error": {"message": "The server had an error", "type": "server_error"}}
        )
        return sse(frames)

    with pytest.raises(anthropic.APIStatusError) as raised:
        with anthropic_client(failing).messages.stream(
            model="claude-haiku-4-5", max_tokens=50, messages=QUESTION
        ) as stream:
            stream.get_final_text()
    assert "The server had an error" in str(raised.value)


# -- a multi-turn tool conversation crossing providers -------------------------


def test_tool_conversation_keeps_its_ids_across_providers() -> None:
    upstream = AnthropicUpstream()
    client = openai_client(upstream)
    first = client.chat.completions.create(
        model="gpt-4o-mini", messages=QUESTION, tools=[WEATHER_TOOL_OPENAI]
    )
    reply = first.choices[0].message
    calls = [c for c in reply.tool_calls or [] if c.type == "function"]
    history: Any = [
        *QUESTION,
        reply.model_dump(exclude_none=True),
        *(
            {"role": "tool", "tool_call_id": c.id, "content": f"weather for {c.function.arguments}"}
            for c in calls
        ),
    ]
    client.chat.completions.create(
        model="gpt-4o-mini", messages=history, tools=[WEATHER_TOOL_OPENAI]
    )

    # the second call reached Anthropic with the same ids on both sides of the exchange
    user, assistant, results = upstream.sent[1]["messages"]
    assert user == {"role": "user", "content": "Weather in Paris and Oslo?"}
    uses = [b for b in assistant["content"] if b["type"] == "tool_use"]
    assert [b["id"] for b in uses] == [
        "toolu_01A09q90qw90lq917835lq9",
        "toolu_01B19r91rx91mr928946mr0",
    ]
    assert uses[0]["input"] == {"city": "Paris"}
    assert [b["tool_use_id"] for b in results["content"]] == [b["id"] for b in uses]

    # and the mirror image: an Anthropic conversation answered by OpenAI
    back = OpenAIUpstream()
    aclient = anthropic_client(back)
    answer = aclient.messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=QUESTION, tools=[WEATHER_TOOL_ANTHROPIC]
    )
    uses_b = [b for b in answer.content if b.type == "tool_use"]
    aclient.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        tools=[WEATHER_TOOL_ANTHROPIC],
        messages=[
            *QUESTION,
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in answer.content],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": b.id, "content": "sunny"} for b in uses_b
                ],
            },
        ],
    )
    sent = back.sent[1]["messages"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == ["call_paris_01", "call_oslo_02"]
    assert [m["tool_call_id"] for m in sent[2:]] == ["call_paris_01", "call_oslo_02"]
