"""Stream translators on recorded streams, every frame checked by the SDK's own types."""

from __future__ import annotations

import json
import random
from typing import Any

import anthropic.types
import openai.types.chat
import pydantic
import pytest

from sidecar.llm.translate import StreamToAnthropic, StreamToOpenAI
from tests.sidecar.llm.translate.wire import anthropic_events, frames_data, openai_chunks

ANTHROPIC_EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)


def run_to_openai(name: str, include_usage: bool = True) -> list[tuple[str, Any]]:
    translator = StreamToOpenAI("gpt-4o-mini", "chatcmpl-test", include_usage, created=7)
    frames: list[bytes] = []
    for event, data in anthropic_events(name):
        frames += translator.feed(event, data)
    return frames_data(frames)


def openai_chunk_dicts(frames: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    chunks = [data for _, data in frames if data != "[DONE]"]
    for chunk in chunks:
        openai.types.chat.ChatCompletionChunk.model_validate(chunk)
    return chunks


def run_to_anthropic(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    translator = StreamToAnthropic("claude-haiku-4-5", "msg_test")
    frames: list[bytes] = []
    for chunk in chunks:
        frames += translator.feed(chunk)
    frames += translator.finish()
    events = frames_data(frames)
    for event, data in events:
        assert event == data["type"]
        ANTHROPIC_EVENT.validate_python(data)
    return events


def assert_blocks_are_sequential(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Anthropic's order: blocks 0, 1, 2… each started, fed, stopped before the next starts."""
    open_index: int | None = None
    next_index = 0
    for event, data in events:
        if event == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        elif event == "content_block_delta":
            assert data["index"] == open_index
        elif event == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None


def blocks(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The content blocks a client accumulates from the events."""
    out: list[dict[str, Any]] = []
    for event, data in events:
        if event == "content_block_start":
            out.append({**data["content_block"], "partial_json": ""})
        elif event == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                out[data["index"]]["text"] += delta["text"]
            else:
                out[data["index"]]["partial_json"] += delta["partial_json"]
    for block in out:
        partial = block.pop("partial_json")
        if block["type"] == "tool_use":
            block["input"] = json.loads(partial) if partial else {}
    return out


# -- Anthropic -> OpenAI -----------------------------------------------------


def test_anthropic_stream_becomes_openai_chunks() -> None:
    frames = run_to_openai("anthropic_stream_text_and_tools.sse")
    chunks = openai_chunk_dicts(frames)

    assert frames[-1] == ("", "[DONE]")
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {
        ("chatcmpl-test", 7, "gpt-4o-mini")
    }
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Okay, let's check the weather in both cities:"

    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for call in (chunk["choices"] or [{}])[0].get("delta", {}).get("tool_calls", []):
            entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.get("id") or ""
            entry["name"] += call.get("function", {}).get("name") or ""
            entry["arguments"] += call["function"].get("arguments") or ""
    # Anthropic blocks 1 and 2 are OpenAI tool calls 0 and 1
    assert sorted(calls) == [0, 1]
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert calls[1]["id"] == "toolu_01Vz2bGJdMfg4tHqfRkCRvPk"
    assert json.loads(calls[1]["arguments"]) == {"city": "Oslo", "unit": "celsius"}

    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishing) == 1
    assert finishing[0]["choices"][0]["finish_reason"] == "tool_calls"
    # the finish chunk is the last one with a choice; the usage chunk has none
    last_choice = max(i for i, c in enumerate(chunks) if c["choices"])
    assert chunks[last_choice] is finishing[0]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 600,  # 472 input + 128 read from the cache
        "completion_tokens": 89,
        "total_tokens": 689,
        "prompt_tokens_details": {"cached_tokens": 128},
    }


def test_no_usage_chunk_unless_the_client_asked() -> None:
    chunks = openai_chunk_dicts(run_to_openai("anthropic_stream_text_and_tools.sse", False))
    assert all(c["choices"] and "usage" not in c for c in chunks)


def test_content_started_only_with_the_first_text_or_tool_delta() -> None:
    translator = StreamToOpenAI("m", "id", True)
    events = anthropic_events("anthropic_stream_text_and_tools.sse")
    seen = []
    for event, data in events[:5]:
        translator.feed(event, data)
        seen.append(translator.content_started)
    # message_start, content_block_start (empty), ping, then the first text delta
    assert seen == [False, False, False, True, True]


def test_anthropic_in_band_error_becomes_an_openai_error_frame() -> None:
    frames = run_to_openai("anthropic_stream_overloaded.sse")
    assert frames[-1] == (
        "",
        {
            "error": {
                "message": "Overloaded",
                "type": "server_error",
                "param": None,
                "code": "overloaded",
            }
        },
    )
    assert ("", "[DONE]") not in frames


def test_tool_input_given_whole_in_block_start_is_sent_once() -> None:
    # Some Anthropic-compatible servers put the whole input in content_block_start.
    translator = StreamToOpenAI("m", "id", False, created=1)
    block = {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": 1}}
    frames = translator.feed("message_start", {"type": "message_start", "message": {"usage": {}}})
    frames += translator.feed("content_block_start", {"index": 0, "content_block": block})
    frames += translator.feed(
        "content_block_delta",
        {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'}},
    )
    arguments = "".join(
        call["function"]["arguments"]
        for chunk in openai_chunk_dicts(frames_data(frames))
        for call in chunk["choices"][0]["delta"].get("tool_calls", [])
    )
    assert json.loads(arguments) == {"a": 1}


def test_thinking_blocks_do_not_shift_tool_call_indexes() -> None:
    translator = StreamToOpenAI("m", "id", False, created=1)
    frames = translator.feed(
        "content_block_start", {"index": 0, "content_block": {"type": "thinking"}}
    )
    frames += translator.feed(
        "content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}
    )
    tool = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
    frames += translator.feed("content_block_start", {"index": 1, "content_block": tool})
    chunks = openai_chunk_dicts(frames_data(frames))
    assert chunks[-1]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert all("thinking" not in json.dumps(c) for c in chunks)


# -- OpenAI -> Anthropic -----------------------------------------------------


def test_openai_stream_becomes_anthropic_events() -> None:
    events = run_to_anthropic(openai_chunks("openai_stream_text_and_tools.sse"))

    assert [e for e, _ in events][:1] == ["message_start"]
    assert [e for e, _ in events][-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert (start["id"], start["model"], start["role"]) == (
        "msg_test",
        "claude-haiku-4-5",
        "assistant",
    )
    assert_blocks_are_sequential(events)
    assert blocks(events) == [
        {"type": "text", "text": "Checking both cities."},
        {
            "type": "tool_use",
            "id": "call_paris_01",
            "name": "get_weather",
            "input": {"city": "Paris"},
        },
        {
            "type": "tool_use",
            "id": "call_oslo_02",
            "name": "get_weather",
            "input": {"city": "Oslo", "unit": "celsius"},
        },
    ]
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"] == {
        "input_tokens": 86,
        "output_tokens": 52,
        "cache_read_input_tokens": 1920,
        "cache_creation_input_tokens": 0,
    }


def test_sequential_tool_calls_stream_live() -> None:
    translator = StreamToAnthropic("m", "msg")
    chunks = openai_chunks("openai_stream_text_and_tools.sse")
    for chunk in chunks[:6]:  # through tool call 0's last argument fragment
        translator.feed(chunk)
    frames = frames_data(translator.feed(chunks[6]))  # tool call 1 begins
    assert [(e, d.get("index")) for e, d in frames] == [
        ("content_block_stop", 1),
        ("content_block_start", 2),
    ]


def test_interleaved_parallel_tool_calls_become_sequential_blocks() -> None:
    events = run_to_anthropic(openai_chunks("openai_stream_interleaved_tools.sse"))
    assert_blocks_are_sequential(events)
    assert blocks(events) == [
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {"zone": "Europe/Oslo"}},
    ]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def _call_chunk(
    index: int, fragment: str, *, first: bool = False, name: str = "f"
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": fragment}}
    if first:
        call.update(id=f"call_{index}", type="function")
        call["function"]["name"] = name
    return {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}


@pytest.mark.parametrize("seed", range(25))
def test_randomly_split_and_interleaved_arguments_arrive_whole(seed: int) -> None:
    rng = random.Random(seed)
    inputs = [
        {"n": i, "text": "x" * rng.randint(0, 30), "list": list(range(rng.randint(0, 4)))}
        for i in range(3)
    ]
    pieces: list[list[str]] = []
    for value in inputs:
        encoded = json.dumps(value)
        cuts = sorted(rng.sample(range(1, len(encoded)), rng.randint(0, 6)))
        pieces.append(
            [encoded[a:b] for a, b in zip([0, *cuts], [*cuts, len(encoded)], strict=True)]
        )
    chunks = [
        {
            "id": "c",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me see. "}}],
        }
    ]
    started: set[int] = set()
    while any(pieces):
        index = rng.choice([i for i, left in enumerate(pieces) if left])
        # calls appear in index order, as OpenAI numbers them
        for earlier in range(index + 1):
            if earlier not in started:
                started.add(earlier)
                chunks.append(_call_chunk(earlier, "", first=True))
        chunks.append(_call_chunk(index, pieces[index].pop(0)))
    chunks.append(
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
    )

    events = run_to_anthropic(chunks)
    assert_blocks_are_sequential(events)
    assert blocks(events) == [
        {"type": "text", "text": "Let me see. "},
        *(
            {"type": "tool_use", "id": f"call_{i}", "name": "f", "input": inputs[i]}
            for i in range(3)
        ),
    ]


def test_text_after_an_unfinished_tool_call_waits_for_it() -> None:
    chunks = [
        _call_chunk(0, '{"a":', first=True),
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "and then"}}]},
        _call_chunk(0, " 1}"),
    ]
    events = run_to_anthropic(chunks)
    assert_blocks_are_sequential(events)
    assert blocks(events) == [
        {"type": "tool_use", "id": "call_0", "name": "f", "input": {"a": 1}},
        {"type": "text", "text": "and then"},
    ]


def test_plain_text_stream_ends_with_end_turn() -> None:
    chunks = [
        {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}}]},
        {
            "id": "c",
            "choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": "stop"}],
        },
    ]
    events = run_to_anthropic(chunks)
    assert blocks(events) == [{"type": "text", "text": "Hi there"}]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    # no usage chunk came: zero, not a guess
    assert events[-2][1]["usage"]["output_tokens"] == 0


def test_length_finish_is_max_tokens() -> None:
    chunks = [
        {
            "id": "c",
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "length"}],
        }
    ]
    assert run_to_anthropic(chunks)[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_openai_in_band_error_becomes_an_anthropic_error_event() -> None:
    translator = StreamToAnthropic("m", "msg")
    translator.feed({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    error = {"error": {"message": "The server had an error", "type": "server_error", "code": None}}
    frames = frames_data(translator.feed(error))
    assert frames == [
        (
            "error",
            {"type": "error", "error": {"type": "api_error", "message": "The server had an error"}},
        )
    ]
    assert translator.finish() == []
    anthropic.types.ErrorResponse.model_validate(frames[0][1])


def test_content_started_with_the_first_text_block() -> None:
    translator = StreamToAnthropic("m", "msg")
    translator.feed(
        {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    )
    assert translator.content_started is False
    translator.feed({"id": "c", "choices": [{"index": 0, "delta": {"content": "x"}}]})
    assert translator.content_started is True


def test_finish_without_any_chunk_is_still_a_well_formed_message() -> None:
    translator = StreamToAnthropic("m", "msg")
    events = frames_data(translator.finish())
    assert [e for e, _ in events] == ["message_start", "message_delta", "message_stop"]


def test_streamed_tool_calls_finishing_with_stop_are_still_tool_use() -> None:
    chunks = [
        _call_chunk(0, '{"a": 1}', first=True),
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    assert run_to_anthropic(chunks)[-2][1]["delta"]["stop_reason"] == "tool_use"

    translator = StreamToOpenAI("m", "id", False, created=1)
    tool = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
    translator.feed("content_block_start", {"index": 0, "content_block": tool})
    frames = translator.feed("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {}})
    chunk = openai_chunk_dicts(frames_data(frames))[-1]
    assert chunk["choices"][0]["finish_reason"] == "tool_calls"


def test_streamed_named_stop_string_is_a_stop_sequence() -> None:
    finish = {"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}
    chunks = [
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}}]},
        {"id": "c", "choices": [finish]},
    ]
    delta = run_to_anthropic(chunks)[-2][1]["delta"]
    assert delta == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_integers_beyond_64_bits_still_make_a_frame() -> None:
    # JSON allows them (here an absurd usage count); the fast encoder refuses them.
    translator = StreamToOpenAI("m", "id", True, created=1)
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 10**30}}}
    frames = translator.feed("message_start", start)
    frames += translator.feed("message_stop", {"type": "message_stop"})
    chunks = openai_chunk_dicts(frames_data(frames))
    assert chunks[-1]["usage"]["prompt_tokens"] == 10**30
