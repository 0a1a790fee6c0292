"""Complete (non-streamed) answers: Anthropic Message <-> OpenAI chat.completion.

Usage is the one place where the two formats count differently: Anthropic's
`input_tokens` excludes the tokens it read from or wrote to its prompt cache,
OpenAI's `prompt_tokens` includes the cached ones (`prompt_tokens_details.
cached_tokens` says how many). So prompt = input + cache read + cache write, and
back: input = prompt - cached, cache read = cached.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sidecar.llm.translate.requests import Untranslatable, parse_arguments
from sidecar.llm.translate.shapes import count, obj, objs, text

# Anthropic stop_reason -> OpenAI finish_reason. pause_turn only follows server
# tools (which are never translated); the turn did end, so "stop".
_FINISH_BY_STOP_REASON = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP_REASON_BY_FINISH = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason_for(stop_reason: str | None, *, called_tools: bool) -> str:
    """OpenAI's finish_reason for an Anthropic stop_reason (unknown or none: stop).

    A turn that called tools finishes with tool_calls even when the upstream said
    end_turn (some Anthropic-compatible servers do): a client seeing "stop"
    would not run the calls.
    """
    reason = _FINISH_BY_STOP_REASON.get(stop_reason or "", "stop")
    return "tool_calls" if called_tools and reason == "stop" else reason


def stop_reason_for(
    finish_reason: str | None, *, called_tools: bool, refused: bool = False, matched: Any = None
) -> tuple[str, str | None]:
    """Anthropic's (stop_reason, stop_sequence) for an OpenAI finish_reason.

    Unknown or none is end_turn. As above, a turn with tool calls is tool_use even
    if the upstream said "stop" (LiteLLM users lost tool calls to an end_turn
    here), an OpenAI refusal is refusal, and vLLM-style servers that name the
    stop string that matched (`choice.stop_reason`) give stop_sequence.
    """
    if refused:
        return "refusal", None
    reason = _STOP_REASON_BY_FINISH.get(finish_reason or "", "end_turn")
    if reason != "end_turn":
        return reason, None
    if called_tools:
        return "tool_use", None
    if isinstance(matched, str) and matched:
        return "stop_sequence", matched
    return "end_turn", None


def usage_to_openai(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage as OpenAI usage (prompt tokens include the cached ones)."""
    cache_read = count(usage.get("cache_read_input_tokens"))
    cache_write = count(usage.get("cache_creation_input_tokens"))
    prompt = count(usage.get("input_tokens")) + cache_read + cache_write
    completion = count(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def usage_to_anthropic(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage as Anthropic usage (input tokens exclude the cached ones)."""
    cached = count(obj(usage.get("prompt_tokens_details")).get("cached_tokens"))
    prompt = count(usage.get("prompt_tokens"))
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": count(usage.get("completion_tokens")),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def response_to_openai(
    message: dict[str, Any], *, model: str | None = None, created: int | None = None
) -> dict[str, Any]:
    """An Anthropic Message as an OpenAI chat.completion (one choice)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in objs(message.get("content")):
        kind = block.get("type")
        if kind == "text":
            texts.append(text(block.get("text")))
        elif kind == "tool_use":
            arguments = block.get("input", {})
            if not isinstance(arguments, dict):
                raise Untranslatable("tool_use.input")
            calls.append(
                {
                    "id": text(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": text(block.get("name")),
                        "arguments": json.dumps(arguments, ensure_ascii=False),
                    },
                }
            )
        # thinking and server-tool blocks have no place in a chat.completion; the
        # request side refuses the features that would produce them.
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": text(message.get("id")),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model or text(message.get("model")),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason_for(
                    text(message.get("stop_reason")), called_tools=bool(calls)
                ),
            }
        ],
        "usage": usage_to_openai(obj(message.get("usage"))),
    }


def response_to_anthropic(
    completion: dict[str, Any], *, model: str | None = None
) -> dict[str, Any]:
    """An OpenAI chat.completion (its first choice) as an Anthropic Message.

    Tool-call arguments that are not a JSON object (OpenAI can cut them off at
    max_tokens) raise `Untranslatable("tool_calls.arguments")`: an Anthropic
    tool_use input must be an object, and inventing `{}` would run the tool
    with no arguments.
    """
    choice = (objs(completion.get("choices")) or [{}])[0]
    reply = obj(choice.get("message"))
    content: list[dict[str, Any]] = []
    said = reply.get("content")
    if isinstance(said, list):
        said = "".join(text(part.get("text")) for part in objs(said))
    if text(said):
        content.append({"type": "text", "text": said})
    refusal = text(reply.get("refusal"))
    if refusal:
        content.append({"type": "text", "text": refusal})
    for call in objs(reply.get("tool_calls")):
        function = obj(call.get("function"))
        content.append(
            {
                "type": "tool_use",
                "id": text(call.get("id")),
                "name": text(function.get("name")),
                "input": parse_arguments(function.get("arguments"), "tool_calls.arguments"),
            }
        )
    stop_reason, stop_sequence = stop_reason_for(
        text(choice.get("finish_reason")),
        called_tools=any(block["type"] == "tool_use" for block in content),
        refused=bool(refusal),
        matched=choice.get("stop_reason"),
    )
    return {
        "id": text(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model or text(completion.get("model")),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_to_anthropic(obj(completion.get("usage"))),
    }
