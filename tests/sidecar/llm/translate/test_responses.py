"""Complete answers and error bodies, each checked by the receiving SDK's own types."""

from __future__ import annotations

import json
from typing import Any

import anthropic.types
import openai.types.chat
import pytest

from sidecar.llm.translate import (
    Untranslatable,
    error_to_anthropic,
    error_to_openai,
    response_to_anthropic,
    response_to_openai,
)
from tests.sidecar.llm.translate.wire import load


def as_openai(message: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out = response_to_openai(message, **kw)
    openai.types.chat.ChatCompletion.model_validate(out, strict=False)
    return out


def as_anthropic(completion: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out = response_to_anthropic(completion, **kw)
    anthropic.types.Message.model_validate(out)
    return out


def anthropic_message(**fields: Any) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 2},
        **fields,
    }


def openai_completion(finish_reason: str = "stop", **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "refusal": None, **message},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }


# -- Anthropic -> OpenAI -----------------------------------------------------


def test_anthropic_tool_use_message_becomes_a_chat_completion() -> None:
    out = as_openai(load("anthropic_message_tool_use.json"), model="gpt-4o-mini", created=5)

    assert out["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert out["object"] == "chat.completion"
    assert out["created"] == 5
    assert out["model"] == "gpt-4o-mini"
    (choice,) = out["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "I'll look up both cities."
    calls = choice["message"]["tool_calls"]
    assert [c["id"] for c in calls] == [
        "toolu_01A09q90qw90lq917835lq9",
        "toolu_01B19r91rx91mr928946mr0",
    ]
    assert all(c["type"] == "function" and c["function"]["name"] == "get_weather" for c in calls)
    assert json.loads(calls[1]["function"]["arguments"]) == {"city": "Oslo", "unit": "celsius"}


def test_anthropic_usage_counts_cache_tokens_as_prompt_tokens() -> None:
    usage = as_openai(load("anthropic_message_tool_use.json"))["usage"]
    # input 25 + cache read 1900 + cache write 100
    assert usage == {
        "prompt_tokens": 2025,
        "completion_tokens": 61,
        "total_tokens": 2086,
        "prompt_tokens_details": {"cached_tokens": 1900},
    }


def test_the_answering_model_is_named_when_no_model_is_given() -> None:
    assert as_openai(anthropic_message())["model"] == "claude-haiku-4-5"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reason_becomes_finish_reason(stop_reason: str, finish_reason: str) -> None:
    out = as_openai(anthropic_message(stop_reason=stop_reason))
    assert out["choices"][0]["finish_reason"] == finish_reason


def test_a_message_with_only_tool_use_has_null_content() -> None:
    content = [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]
    reply = as_openai(anthropic_message(content=content, stop_reason="tool_use"))["choices"][0]
    assert reply["message"]["content"] is None
    assert reply["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


# -- OpenAI -> Anthropic -----------------------------------------------------


def test_openai_tool_calls_completion_becomes_an_anthropic_message() -> None:
    out = as_anthropic(load("openai_completion_tool_calls.json"), model="claude-haiku-4-5")

    assert out["id"] == "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert out["type"] == "message"
    assert out["model"] == "claude-haiku-4-5"
    assert out["stop_reason"] == "tool_use"
    assert out["content"] == [
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


def test_openai_usage_splits_cached_tokens_out_of_input_tokens() -> None:
    usage = as_anthropic(load("openai_completion_tool_calls.json"))["usage"]
    assert usage == {
        "input_tokens": 86,  # 2006 prompt - 1920 cached
        "output_tokens": 300,
        "cache_read_input_tokens": 1920,
        "cache_creation_input_tokens": 0,
    }


def test_usage_survives_a_round_trip() -> None:
    original = load("anthropic_message_tool_use.json")
    back = response_to_anthropic(response_to_openai(original))
    # a cache write is counted as plain input by OpenAI's usage, so it comes back as input
    assert back["usage"] == {
        "input_tokens": 125,
        "output_tokens": 61,
        "cache_read_input_tokens": 1900,
        "cache_creation_input_tokens": 0,
    }
    assert back["content"][1:] == original["content"][2:]


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_finish_reason_becomes_stop_reason(finish_reason: str, stop_reason: str) -> None:
    assert as_anthropic(openai_completion(finish_reason))["stop_reason"] == stop_reason


def test_an_openai_refusal_is_an_anthropic_refusal() -> None:
    out = as_anthropic(openai_completion(content=None, refusal="I can't help with that."))
    assert out["stop_reason"] == "refusal"
    assert out["content"] == [{"type": "text", "text": "I can't help with that."}]


def test_null_content_with_tool_calls_has_no_empty_text_block() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    out = as_anthropic(openai_completion("tool_calls", content=None, tool_calls=[call]))
    assert out["content"] == [{"type": "tool_use", "id": "call_1", "name": "f", "input": {}}]


def test_truncated_tool_arguments_are_untranslatable() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"city": "Pa'},
    }
    with pytest.raises(Untranslatable) as refused:
        response_to_anthropic(openai_completion("length", content=None, tool_calls=[call]))
    assert refused.value.field == "tool_calls.arguments"


# -- errors ------------------------------------------------------------------


def test_anthropic_overloaded_error_in_openai_shape() -> None:
    assert error_to_openai(529, load("anthropic_error_overloaded.json")) == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded",
        }
    }


@pytest.mark.parametrize(
    ("status", "kind", "openai_type", "code"),
    [
        (400, "invalid_request_error", "invalid_request_error", None),
        (401, "authentication_error", "invalid_request_error", "invalid_api_key"),
        (402, "billing_error", "insufficient_quota", "insufficient_quota"),
        (403, "permission_error", "invalid_request_error", "permission_denied"),
        (404, "not_found_error", "invalid_request_error", "not_found"),
        (413, "request_too_large", "invalid_request_error", "request_too_large"),
        (429, "rate_limit_error", "requests", "rate_limit_exceeded"),
        (500, "api_error", "server_error", None),
        (504, "timeout_error", "server_error", "timeout"),
    ],
)
def test_anthropic_error_types_map_to_openai(
    status: int, kind: str, openai_type: str, code: str | None
) -> None:
    body = {"type": "error", "error": {"type": kind, "message": "m"}}
    error = error_to_openai(status, body)["error"]
    assert (error["type"], error["code"], error["message"]) == (openai_type, code, "m")


def test_openai_errors_map_to_anthropic_types() -> None:
    rate = error_to_anthropic(429, load("openai_error_rate_limit.json"))
    assert rate["type"] == "error"
    assert rate["error"]["type"] == "rate_limit_error"
    assert rate["error"]["message"].startswith("Rate limit reached for gpt-4o-mini")
    key = error_to_anthropic(401, load("openai_error_invalid_key.json"))
    assert key["error"]["type"] == "authentication_error"
    anthropic.types.ErrorResponse.model_validate(rate)
    anthropic.types.ErrorResponse.model_validate(key)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (404, "not_found_error"),
        (418, "invalid_request_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
    ],
)
def test_an_error_body_with_no_known_type_is_typed_by_its_status(status: int, kind: str) -> None:
    out = error_to_anthropic(status, {"error": {"message": "down", "type": "server_error"}})
    assert out["error"] == {"type": kind, "message": "down"}


def test_an_error_body_with_no_message_gets_one_naming_the_status() -> None:
    assert error_to_openai(502, {})["error"]["message"] == "upstream answered HTTP 502"
    assert (
        error_to_anthropic(502, {"detail": "x"})["error"]["message"] == "upstream answered HTTP 502"
    )


# -- what compatible servers get wrong ---------------------------------------


def test_tool_calls_finishing_with_stop_are_still_tool_use() -> None:
    # Ollama/vLLM-style servers say "stop" after a tool call; "end_turn" would make an
    # Anthropic client skip the calls.
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert as_anthropic(openai_completion("stop", tool_calls=[call]))["stop_reason"] == "tool_use"
    content = [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]
    out = as_openai(anthropic_message(content=content, stop_reason="end_turn"))
    assert out["choices"][0]["finish_reason"] == "tool_calls"


def test_a_named_matched_stop_string_is_a_stop_sequence() -> None:
    completion = openai_completion("stop")
    completion["choices"][0]["stop_reason"] = "END"  # vLLM names the stop string that matched
    out = as_anthropic(completion)
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "END")
