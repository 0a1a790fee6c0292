"""Request, answer and stream samples in the providers' documented wire formats.

Shapes follow OpenAI's Chat Completions reference (chat.completion,
chat.completion.chunk with stream_options.include_usage) and Anthropic's
Messages reference and streaming guide (message_start, content_block_start,
ping, content_block_delta, content_block_stop, message_delta, message_stop,
error), with their field order and spacing.
"""

from __future__ import annotations

import json
from typing import Any

OPENAI_REQUEST = (
    b'{"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "You are terse."},'
    b' {"role": "user", "content": "Say hello."}], "stream": true, "max_completion_tokens": 256,'
    b' "temperature": 0.2}'
)

ANTHROPIC_REQUEST = (
    b'{"model":"claude-haiku-4-5","max_tokens":1024,"system":[{"type":"text","text":"Be terse.",'
    b'"cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"Say hello."}],'
    b'"stream":true}'
)

OPENAI_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello!",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 350,
        "total_tokens": 1550,
        "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 200,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 3000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 350,
        "service_tier": "standard",
    },
}


def _chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
    document = {
        "id": "chatcmpl-AyPNinnUqUDYo9SAdA52NobMflmj2",
        "object": "chat.completion.chunk",
        "created": 1738960610,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
        "choices": choices,
        "usage": usage,
    }
    return b"data: " + json.dumps(document, separators=(",", ":")).encode() + b"\n\n"


def _delta(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]


OPENAI_ROLE_CHUNK = _chunk(_delta({"role": "assistant", "content": "", "refusal": None}))
OPENAI_CONTENT_CHUNKS = [_chunk(_delta({"content": "Hello"})), _chunk(_delta({"content": "!"}))]
OPENAI_FINISH_CHUNK = _chunk(_delta({}, "stop"))
OPENAI_USAGE_CHUNK = _chunk(
    [],
    {
        "prompt_tokens": 1200,
        "completion_tokens": 350,
        "total_tokens": 1550,
        "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
)
OPENAI_DONE = b"data: [DONE]\n\n"

#: A streamed chat completion with stream_options.include_usage, event by event.
OPENAI_STREAM_EVENTS = [
    OPENAI_ROLE_CHUNK,
    *OPENAI_CONTENT_CHUNKS,
    OPENAI_FINISH_CHUNK,
    OPENAI_USAGE_CHUNK,
    OPENAI_DONE,
]
OPENAI_STREAM = b"".join(OPENAI_STREAM_EVENTS)

OPENAI_TOOL_CALL_CHUNK = _chunk(
    _delta(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    )
)

OPENAI_ERROR_EVENT = (
    b'data: {"error":{"message":"The server had an error while processing your request.'
    b' Sorry about that!","type":"server_error","param":null,"code":null}}\n\n'
)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


ANTHROPIC_MESSAGE_START = _event(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-haiku-4-5-20251001",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 200,
                "cache_creation_input_tokens": 1000,
                "cache_read_input_tokens": 3000,
                "output_tokens": 1,
            },
        },
    },
)
ANTHROPIC_TEXT_BLOCK_START = _event(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
ANTHROPIC_PING = _event("ping", {"type": "ping"})
ANTHROPIC_DELTAS = [
    _event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    )
    for text in ("Hello", "!")
]
ANTHROPIC_BLOCK_STOP = _event("content_block_stop", {"type": "content_block_stop", "index": 0})
ANTHROPIC_MESSAGE_DELTA = _event(
    "message_delta",
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 350},
    },
)
ANTHROPIC_MESSAGE_STOP = _event("message_stop", {"type": "message_stop"})

#: A streamed message, event by event.
ANTHROPIC_STREAM_EVENTS = [
    ANTHROPIC_MESSAGE_START,
    ANTHROPIC_TEXT_BLOCK_START,
    ANTHROPIC_PING,
    *ANTHROPIC_DELTAS,
    ANTHROPIC_BLOCK_STOP,
    ANTHROPIC_MESSAGE_DELTA,
    ANTHROPIC_MESSAGE_STOP,
]
ANTHROPIC_STREAM = b"".join(ANTHROPIC_STREAM_EVENTS)

ANTHROPIC_TOOL_USE_START = _event(
    "content_block_start",
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {
            "type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "input": {},
        },
    },
)

ANTHROPIC_OVERLOADED_EVENT = _event(
    "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
)


def with_line_ends(stream: bytes, line_end: bytes) -> bytes:
    """The same stream with every LF replaced by `line_end` (CRLF or CR)."""
    return stream.replace(b"\n", line_end)
