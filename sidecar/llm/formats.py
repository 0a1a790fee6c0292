"""The two LLM wire formats: which calls are LLM calls, and what their bodies ask for.

Pure functions over a request's method, path and body bytes. The body is
parsed once (orjson, stdlib json as a fallback for what orjson refuses, such
as integers beyond 64 bits) and never re-serialized on the way out: the two
edits the sidecar makes (`with_stream_usage`, `with_max_tokens`) splice the
one member they change into the original bytes, so everything else reaches
the provider byte for byte (SPEC §10, "Same format passes unchanged").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Format = Literal["openai", "anthropic"]

_OPENAI_SUFFIX = "/chat/completions"
_ANTHROPIC_SUFFIX = "/messages"


def call_format(method: str, path: str) -> Format | None:
    """The wire format of a call: `POST …/chat/completions` is OpenAI, `POST …/messages` Anthropic.

    `path` is the request path without its query (a query, if left on, is
    ignored); one trailing `/` is tolerated. Every other call (another
    method, `…/messages/count_tokens`, `…/messages/batches`) is None: it is
    proxied as any API call.
    """
    if method.upper() != "POST":
        return None
    path = path.partition("?")[0]
    if path.endswith("/"):
        path = path[:-1]
    if path.endswith(_OPENAI_SUFFIX):
        return "openai"
    if path.endswith(_ANTHROPIC_SUFFIX):
        return "anthropic"
    return None


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """What an LLM call's body asks for, as far as usage, budgets and streams care.

    - `model`: the body's `model` (None when absent or not a string).
    - `stream`: `"stream": true`.
    - `max_tokens`: the output cap the client set: OpenAI's
      `max_completion_tokens`, else its (deprecated) `max_tokens`;
      Anthropic's `max_tokens`. None when absent or not a non-negative integer.
    - `wants_usage`: whether the client itself will see usage in the answer.
      OpenAI: `stream_options.include_usage` is true (a streamed call without
      it gets it added by the sidecar, and the usage-only chunk that causes is
      then not passed on). Anthropic: always True, its streams always carry
      usage (so a caller testing `stream and not wants_usage` never edits an
      Anthropic body).
    - `input_estimate`: input tokens estimated with no tokenizer, as
      `ceil(len(body bytes) / 4)`. A tokenizer would need files fetched at
      first use (tiktoken does), which fails offline; four bytes a token is
      the usual rule of thumb for English text and JSON, errs high for the
      JSON framing of the messages, and is only used to reserve budget before
      the call (the real figure comes from the provider's usage). Base64
      images count by their bytes, far above what providers bill for them,
      so an image call reserves more than it will cost.
    """

    format: Format
    model: str | None
    stream: bool
    max_tokens: int | None
    wants_usage: bool
    input_estimate: int


def parse_request(format: Format, body: bytes) -> LlmRequest | None:
    """The call's LlmRequest; None when the body is not a JSON object. Never raises."""
    document = _load_object(body)
    if document is None:
        return None
    model = document.get("model")
    stream = document.get("stream") is True
    if format == "openai":
        max_tokens = _token_count(document.get("max_completion_tokens"))
        if max_tokens is None:
            max_tokens = _token_count(document.get("max_tokens"))
        options = document.get("stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    else:
        max_tokens = _token_count(document.get("max_tokens"))
        wants_usage = True
    return LlmRequest(
        format=format,
        model=model if isinstance(model, str) else None,
        stream=stream,
        max_tokens=max_tokens,
        wants_usage=wants_usage,
        input_estimate=math.ceil(len(body) / 4),
    )


def with_stream_usage(body: bytes) -> bytes:
    """The body with `stream_options.include_usage = true` (other stream_options keys kept).

    Called for an OpenAI stream without it. Only the `stream_options` member
    changes (or is added last in the object); every other byte is kept.
    """

    def edit(members: dict[str, tuple[Any, int, int]]) -> dict[str, Any]:
        current = members.get("stream_options")
        options = dict(current[0]) if current is not None and isinstance(current[0], dict) else {}
        options["include_usage"] = True
        return {"stream_options": options}

    return _edit_members(body, (b'"stream_options"',), edit)


def with_model(body: bytes, model: str) -> bytes:
    """The body asking for `model` (an endpoint's own): only that member changes."""

    def edit(members: dict[str, tuple[Any, int, int]]) -> dict[str, Any]:
        return {"model": model}

    return _edit_members(body, (b'"model"',), edit)


def with_max_tokens(format: Format, body: bytes, max_tokens: int) -> bytes:
    """The body with its max tokens set to `max_tokens` (the caller lowers it to fit a budget).

    Anthropic: `max_tokens`. OpenAI: whichever of `max_completion_tokens` and
    `max_tokens` the body uses (both when it has both), `max_tokens` when it
    has neither. Every other byte is kept.
    """
    names = ("max_completion_tokens", "max_tokens") if format == "openai" else ("max_tokens",)

    def edit(members: dict[str, tuple[Any, int, int]]) -> dict[str, Any]:
        present = [name for name in names if name in members]
        return {name: max_tokens for name in present or ["max_tokens"]}

    return _edit_members(body, tuple(f'"{name}"'.encode() for name in names), edit)


# -- parsing --------------------------------------------------------------

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _load_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return None
    return document if isinstance(document, dict) else None


def _token_count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _members(text: str) -> dict[str, tuple[Any, int, int]] | None:
    """Each top-level member of a JSON object: its value and the value's span in `text`.

    A repeated name keeps its last occurrence, as JSON parsers do. None when
    `text` is not one JSON object.
    """
    try:
        position = _skip(text, 0)
        if text[position : position + 1] != "{":
            return None
        position = _skip(text, position + 1)
        members: dict[str, tuple[Any, int, int]] = {}
        if text[position : position + 1] == "}":
            return members if _skip(text, position + 1) == len(text) else None
        while True:
            if text[position : position + 1] != '"':
                return None
            name, position = _DECODER.raw_decode(text, position)
            position = _skip(text, position)
            if text[position : position + 1] != ":":
                return None
            start = _skip(text, position + 1)
            value, end = _DECODER.raw_decode(text, start)
            members[name] = (value, start, end)
            position = _skip(text, end)
            separator = text[position : position + 1]
            if separator == "}":
                return members if _skip(text, position + 1) == len(text) else None
            if separator != ",":
                return None
            position = _skip(text, position + 1)
    except (ValueError, RecursionError):
        return None


def _skip(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_Edit = Callable[[dict[str, tuple[Any, int, int]]], dict[str, Any]]


def _edit_members(
    body: bytes,
    names: tuple[bytes, ...],
    edit: _Edit,
) -> bytes:
    """`body` with the members `edit` returns set: replaced in place, or added last.

    Added last, not first: should a name be in the body in a form the byte
    check cannot see (a key spelt with `\\u` escapes), the added member is
    the later duplicate, which JSON parsers keep (or a strict one refuses the
    call); the client's own value never silently wins over a clamp.
    """
    if not any(name in body for name in names):
        # Fast path (the usual stream call): none of the names occurs anywhere
        # in the body, so none is a member; add them without parsing.
        return _append(body, edit({}))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _rewrite(body, edit)
    members = _members(text)
    if members is None:
        return _rewrite(body, edit)
    changes = edit(members)
    added = {name: value for name, value in changes.items() if name not in members}
    replaced = sorted(
        (
            (members[name][1], members[name][2], value)
            for name, value in changes.items()
            if name in members
        ),
        reverse=True,
    )
    for start, end, value in replaced:
        text = text[:start] + _dumps(value) + text[end:]
    result = text.encode("utf-8")
    return _append(result, added) if added else result


def _append(body: bytes, members: dict[str, Any]) -> bytes:
    """Add `members` after the object's last member, before its closing brace."""
    closing = body.rfind(b"}")
    if closing < 0:
        return _rewrite(body, lambda _: members)
    last = len(body[:closing].rstrip(b" \t\r\n"))
    empty = body[last - 1 : last] == b"{"
    inserted = ",".join(f"{_dumps(name)}:{_dumps(value)}" for name, value in members.items())
    return body[:last] + (b"" if empty else b",") + inserted.encode("utf-8") + body[last:]


def _rewrite(body: bytes, edit: _Edit) -> bytes:
    """Last resort for a body the splicer cannot read (not UTF-8, a BOM): parse and re-serialize."""
    document = _load_object(body)
    if document is None:
        return body
    members = {name: (value, 0, 0) for name, value in document.items()}
    document.update(edit(members))
    return _dumps(document).encode("utf-8")
