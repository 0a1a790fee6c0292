"""The stream watcher: events cut anywhere, kinds, usage, and what the real SDKs make of ours."""

from __future__ import annotations

import json
import statistics
import time
from decimal import Decimal

import anthropic
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.llm.errors import classify_event
from sidecar.llm.formats import Format
from sidecar.llm.sse import SseEvent, StreamWatcher, stream_error_event, summary_comment
from sidecar.llm.usage import Usage
from tests.sidecar.llm.samples import (
    ANTHROPIC_DELTAS,
    ANTHROPIC_MESSAGE_START,
    ANTHROPIC_OVERLOADED_EVENT,
    ANTHROPIC_PING,
    ANTHROPIC_STREAM,
    ANTHROPIC_STREAM_EVENTS,
    ANTHROPIC_TEXT_BLOCK_START,
    ANTHROPIC_TOOL_USE_START,
    OPENAI_CONTENT_CHUNKS,
    OPENAI_DONE,
    OPENAI_ERROR_EVENT,
    OPENAI_ROLE_CHUNK,
    OPENAI_STREAM,
    OPENAI_STREAM_EVENTS,
    OPENAI_TOOL_CALL_CHUNK,
    with_line_ends,
)
from tests.support.upstream import Upstream, stream


def watch(format: Format, *chunks: bytes) -> tuple[StreamWatcher, list[SseEvent]]:
    watcher = StreamWatcher(format)
    events: list[SseEvent] = []
    for chunk in chunks:
        events.extend(watcher.feed(chunk))
    events.extend(watcher.flush())
    return watcher, events


def test_an_openai_stream_with_usage() -> None:
    watcher, events = watch("openai", OPENAI_STREAM)
    assert [event.raw for event in events] == OPENAI_STREAM_EVENTS
    # The role chunk (empty content) is not output; after the first content,
    # events are only parsed when they may hold usage, an error or [DONE], so
    # the finish chunk counts as content.
    assert [event.kind for event in events] == [
        "other",
        "content",
        "content",
        "content",
        "usage",
        "done",
    ]
    assert watcher.content_started and watcher.done and watcher.error is None
    assert watcher.usage == Usage(1200, 350, 1000, 0)
    assert watcher.model == "gpt-4o-mini-2024-07-18"


def test_an_anthropic_stream() -> None:
    watcher, events = watch("anthropic", ANTHROPIC_STREAM)
    assert [event.raw for event in events] == ANTHROPIC_STREAM_EVENTS
    assert [event.kind for event in events] == [
        "other",  # message_start
        "other",  # content_block_start of an empty text block
        "other",  # ping
        "content",
        "content",
        "other",  # content_block_stop
        "other",  # message_delta
        "done",  # message_stop
    ]
    # Input and cache from message_start, output from message_delta.
    assert watcher.usage == Usage(4200, 350, 3000, 1000)
    assert watcher.model == "claude-haiku-4-5-20251001"
    assert watcher.done and watcher.content_started


def test_anthropic_usage_is_known_from_message_start_on() -> None:
    watcher, _ = watch("anthropic", ANTHROPIC_MESSAGE_START)
    assert watcher.usage == Usage(4200, 1, 3000, 1000)
    assert not watcher.content_started


def test_message_delta_restating_input_counts_wins() -> None:
    restated = (
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"input_tokens":210,"cache_read_input_tokens":3000,"output_tokens":40}}\n\n'
    )
    watcher, _ = watch("anthropic", ANTHROPIC_MESSAGE_START, restated)
    assert watcher.usage == Usage(4210, 40, 3000, 1000)


def test_a_tool_use_block_start_is_content() -> None:
    _, events = watch("anthropic", ANTHROPIC_MESSAGE_START, ANTHROPIC_TOOL_USE_START)
    assert [event.kind for event in events] == ["other", "content"]


def test_an_openai_tool_call_chunk_is_content() -> None:
    _, events = watch("openai", OPENAI_ROLE_CHUNK, OPENAI_TOOL_CALL_CHUNK)
    assert [event.kind for event in events] == ["other", "content"]


def test_an_anthropic_error_before_content() -> None:
    watcher, events = watch("anthropic", ANTHROPIC_MESSAGE_START, ANTHROPIC_OVERLOADED_EVENT)
    assert [event.kind for event in events] == ["other", "error"]
    assert watcher.error == {"type": "overloaded_error", "message": "Overloaded"}
    assert not watcher.content_started and not watcher.done
    assert classify_event(watcher.error) == "retry"


def test_an_openai_error_after_content_is_seen() -> None:
    watcher, events = watch(
        "openai", OPENAI_ROLE_CHUNK, OPENAI_CONTENT_CHUNKS[0], OPENAI_ERROR_EVENT
    )
    assert [event.kind for event in events] == ["other", "content", "error"]
    assert watcher.error is not None and watcher.error["type"] == "server_error"
    assert classify_event(watcher.error) == "retry"


@pytest.mark.parametrize(
    ("chunk", "kind"),
    [
        (b'data: {"error": "upstream reset"}\n\n', "error"),
        (b'data: {"choices":[{"index":0,"delta":{"content":"x"}}],"error":null}\n\n', "content"),
        (
            b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n',
            "usage",
        ),
        (b"data:[DONE]\n\n", "done"),
        (b'event: error\ndata: {"message": "overloaded"}\n\n', "error"),
    ],
)
def test_what_still_counts_after_the_first_content(chunk: bytes, kind: str) -> None:
    watcher, events = watch("openai", OPENAI_CONTENT_CHUNKS[0], chunk)
    assert [event.kind for event in events] == ["content", kind]
    assert (watcher.error is not None) == (kind == "error")
    assert (watcher.usage == Usage(3, 2)) == (kind == "usage")


def test_the_word_done_in_content_is_not_the_terminator() -> None:
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"[DONE]"}}]}\n\n'
    watcher, events = watch("openai", OPENAI_CONTENT_CHUNKS[0], chunk)
    assert [event.kind for event in events] == ["content", "content"]
    assert not watcher.done


def test_usage_in_a_chunk_with_choices_is_counted_and_passed_on() -> None:
    # Some OpenAI-compatible servers (Groq's x_groq, vLLM) put usage in the
    # last content chunk: it is read, and the chunk is not a usage-only one.
    chunk = (
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
        b'"x_groq":{"id":"req_01","usage":{"prompt_tokens":30,"completion_tokens":9}}}\n\n'
    )
    watcher, events = watch("openai", OPENAI_CONTENT_CHUNKS[0], chunk, OPENAI_DONE)
    assert [event.kind for event in events] == ["content", "other", "done"]
    assert watcher.usage == Usage(30, 9)


def test_comments_and_pings_are_other() -> None:
    comment = b": OPENROUTER PROCESSING\n\n"
    _, events = watch("openai", comment, OPENAI_CONTENT_CHUNKS[0], comment)
    assert [event.kind for event in events] == ["other", "content", "other"]
    _, events = watch("anthropic", ANTHROPIC_PING, b": keep-alive\n\n")
    assert [event.kind for event in events] == ["other", "other"]


def test_an_anthropic_event_without_its_event_line_goes_by_its_type() -> None:
    _, events = watch("anthropic", b'data: {"type":"content_block_delta","index":0,"delta":{}}\n\n')
    assert [event.kind for event in events] == ["content"]


def test_flush_gives_the_cut_tail() -> None:
    watcher = StreamWatcher("openai")
    assert watcher.feed(OPENAI_CONTENT_CHUNKS[0] + b'data: {"choi') == [
        SseEvent(OPENAI_CONTENT_CHUNKS[0], "content")
    ]
    assert watcher.flush() == [SseEvent(b'data: {"choi', "other")]
    assert watcher.flush() == []
    assert not watcher.done


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r"])
@pytest.mark.parametrize(
    ("format", "stream_bytes", "count"),
    [("openai", OPENAI_STREAM, 6), ("anthropic", ANTHROPIC_STREAM, 8)],
)
def test_crlf_and_cr_streams(
    format: Format, stream_bytes: bytes, count: int, line_end: bytes
) -> None:
    _, plain = watch(format, stream_bytes)
    converted = with_line_ends(stream_bytes, line_end)
    watcher, events = watch(format, converted)
    assert len(events) == count
    assert b"".join(event.raw for event in events) == converted
    assert [event.kind for event in events] == [event.kind for event in plain]
    assert watcher.done


def test_a_crlf_boundary_cut_between_cr_and_lf() -> None:
    converted = with_line_ends(OPENAI_CONTENT_CHUNKS[0], b"\r\n")
    watcher = StreamWatcher("openai")
    assert watcher.feed(converted[:-1]) == []  # the last CR may be half of a CRLF
    assert watcher.feed(converted[-1:]) == [SseEvent(converted, "content")]


_LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r"])
_LINES = st.sampled_from(
    [b"data: {}", b"event: ping", b": comment", b"data: [DONE]", b"id: 7", b"", b"data:x"]
)


@st.composite
def _streams(draw: st.DrawFn) -> tuple[Format, bytes]:
    """A sample stream in one line-end style, or random lines with mixed line ends."""
    kind = draw(st.sampled_from(["openai", "anthropic", "random"]))
    if kind == "random":
        parts = draw(st.lists(st.tuples(_LINES, _LINE_ENDS), max_size=30))
        return "openai", b"".join(line + end for line, end in parts)
    base = OPENAI_STREAM if kind == "openai" else ANTHROPIC_STREAM
    return kind, with_line_ends(base, draw(_LINE_ENDS))  # type: ignore[return-value]


@settings(max_examples=300, deadline=None)
@given(_streams(), st.data())
def test_any_cutting_gives_the_same_events_and_bytes(
    sample: tuple[Format, bytes], data: st.DataObject
) -> None:
    format, stream_bytes = sample
    cuts = sorted(
        data.draw(
            st.lists(st.integers(0, len(stream_bytes)), max_size=max(1, len(stream_bytes) // 8))
        )
    )
    bounds = zip([0, *cuts], [*cuts, len(stream_bytes)], strict=True)
    chunks = [stream_bytes[start:end] for start, end in bounds]
    whole_watcher, whole = watch(format, stream_bytes)
    cut_watcher, cut = watch(format, *chunks)
    assert cut == whole
    assert b"".join(event.raw for event in cut) == stream_bytes
    assert (cut_watcher.usage, cut_watcher.done, cut_watcher.model) == (
        whole_watcher.usage,
        whole_watcher.done,
        whole_watcher.model,
    )


def test_first_content_is_found_well_within_a_millisecond() -> None:
    # The product promises at most 1 ms added to the time to first token;
    # the watcher's part (role chunk, then the first content chunk) must be a
    # small share of it even on a busy 2-core machine.
    timings = []
    for _ in range(200):
        started = time.perf_counter()
        watcher = StreamWatcher("openai")
        watcher.feed(OPENAI_ROLE_CHUNK)
        events = watcher.feed(OPENAI_CONTENT_CHUNKS[0])
        timings.append(time.perf_counter() - started)
        assert events[0].kind == "content"
    assert statistics.median(timings) < 0.0002


def test_stream_error_event_shapes() -> None:
    openai_event = stream_error_event("openai", "upstream cut", "server_error", "req-1")
    assert openai_event.startswith(b"data: ") and openai_event.endswith(b"\n\n")
    assert json.loads(openai_event[6:]) == {
        "error": {
            "message": "upstream cut (request id: req-1)",
            "type": "server_error",
            "code": None,
        }
    }
    anthropic_event = stream_error_event("anthropic", "upstream cut", "api_error", "req-1")
    name, data = anthropic_event.split(b"\n", 1)
    assert name == b"event: error"
    assert json.loads(data.removeprefix(b"data: ")) == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream cut (request id: req-1)"},
        "request_id": "req-1",
    }
    for format, event in (("openai", openai_event), ("anthropic", anthropic_event)):
        watcher, events = watch(format, event)  # type: ignore[arg-type]
        assert [e.kind for e in events] == ["error"] and watcher.error is not None


def test_summary_comment() -> None:
    line = summary_comment(
        {
            "provider": "openai",
            "model": "gpt-4o",
            "usage": {"input": 1200, "output": 350, "cache_read": 1000, "cache_write": 0},
            "cost_usd": Decimal("0.000842"),
        }
    )
    assert line.startswith(b": mirapi-llm {") and line.endswith(b"}\n\n")
    assert line.count(b"\n") == 2
    summary = json.loads(line.removeprefix(b": mirapi-llm "))
    assert summary["cost_usd"] == 0.000842 and summary["usage"]["cache_read"] == 1000
    _, events = watch("openai", line)
    assert [event.kind for event in events] == ["other"]


async def test_the_openai_sdk_raises_on_our_error_event_and_skips_our_comment(
    upstream: Upstream,
) -> None:
    summary = summary_comment({"provider": "openai", "cost_usd": Decimal("0.01")})
    client = openai.AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0)
    upstream.then(
        stream([OPENAI_ROLE_CHUNK, OPENAI_CONTENT_CHUNKS[0], summary, OPENAI_DONE], gap=0),
        stream(
            [
                OPENAI_ROLE_CHUNK,
                OPENAI_CONTENT_CHUNKS[0],
                stream_error_event("openai", "the upstream failed", "server_error", "req-9"),
            ],
            gap=0,
        ),
    )
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    texts = [
        chunk.choices[0].delta.content
        async for chunk in await client.chat.completions.create(**request, stream=True)  # type: ignore[call-overload]
    ]
    assert texts == ["", "Hello"]
    with pytest.raises(openai.APIError) as raised:
        async for _ in await client.chat.completions.create(**request, stream=True):  # type: ignore[call-overload]
            pass
    assert raised.value.type == "server_error"
    assert "req-9" in raised.value.message
    await client.close()


async def test_the_anthropic_sdk_raises_on_our_error_event(upstream: Upstream) -> None:
    client = anthropic.AsyncAnthropic(base_url=upstream.url, api_key="sk-ant-test", max_retries=0)
    upstream.then(
        stream(
            [
                ANTHROPIC_MESSAGE_START,
                ANTHROPIC_TEXT_BLOCK_START,
                ANTHROPIC_DELTAS[0],
                stream_error_event("anthropic", "the upstream failed", "overloaded_error", "req-7"),
            ],
            gap=0,
        )
    )
    texts = []
    with pytest.raises(anthropic.APIStatusError) as raised:
        async with client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
        ) as events:
            async for text in events.text_stream:
                texts.append(text)
    assert texts == ["Hello"]
    assert raised.value.type == "overloaded_error"
    assert "req-7" in str(raised.value)
    await client.close()
