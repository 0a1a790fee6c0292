"""Helpers for the translation tests: fixtures, SSE frames, SDK request types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def sse_events(name: str) -> list[tuple[str, str]]:
    """A recorded SSE stream as (event name, raw data) pairs, in order."""
    return parse_sse((FIXTURES / name).read_bytes())


def parse_sse(raw: bytes) -> list[tuple[str, str]]:
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame.strip():
            continue
        event, data = "", []
        for line in frame.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        events.append((event, "\n".join(data)))
    return events


def anthropic_events(name: str) -> list[tuple[str, dict[str, Any]]]:
    return [(event, json.loads(data)) for event, data in sse_events(name)]


def openai_chunks(name: str) -> list[dict[str, Any]]:
    """An OpenAI stream fixture's chunks, without the closing [DONE]."""
    return [json.loads(data) for _, data in sse_events(name) if data != "[DONE]"]


def frames_data(frames: list[bytes]) -> list[tuple[str, Any]]:
    """Frames we produced, parsed back; [DONE] stays a string."""
    out: list[tuple[str, Any]] = []
    for frame in frames:
        assert frame.endswith(b"\n\n"), frame
        ((event, data),) = parse_sse(frame)
        out.append((event, data if data == "[DONE]" else json.loads(data)))
    return out


def _drain(value: Any) -> Any:
    # pydantic validates Iterable[...] fields lazily; walking them forces it.
    if isinstance(value, dict):
        return {key: _drain(item) for key, item in value.items()}
    if isinstance(value, list | Iterator):
        return [_drain(item) for item in value]
    return value


def _accept(params: Any, body: dict[str, Any], extra: frozenset[str] = frozenset()) -> None:
    known = params.__required_keys__ | params.__optional_keys__ | extra
    assert set(body) <= known, set(body) - known
    typed = {key: value for key, value in body.items() if key not in extra}
    # The adapter must outlive the lazy iterators it hands out (pydantic-core panics
    # otherwise), hence one kept per type.
    adapter = _ADAPTERS.setdefault(params, pydantic.TypeAdapter(params))
    _drain(adapter.validate_python(typed))


_ADAPTERS: dict[Any, pydantic.TypeAdapter[Any]] = {}


# Anthropic's SDK 2.x speaks API version 2026-10-21, which dropped the sampling
# parameters; under 2023-06-01 (what the sidecar sends on a translated call) they
# are documented numbers in 0-1.
_ANTHROPIC_2023_SAMPLING = frozenset({"temperature", "top_p"})


def assert_anthropic_request(body: dict[str, Any]) -> None:
    """The Anthropic SDK's own request type accepts the body."""
    plain = {k: v for k, v in body.items() if k != "stream"}
    for key in _ANTHROPIC_2023_SAMPLING & set(plain):
        assert isinstance(plain[key], float | int) and 0 <= plain[key] <= 1, (key, plain[key])
    _accept(MessageCreateParamsNonStreaming, plain, _ANTHROPIC_2023_SAMPLING)


def assert_openai_request(body: dict[str, Any]) -> None:
    """The OpenAI SDK's own request type accepts the body."""
    plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    _accept(CompletionCreateParamsNonStreaming, plain)
