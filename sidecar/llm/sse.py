"""Watching a streamed LLM answer event by event (SPEC §10, "Safe streams").

`StreamWatcher.feed` cuts the bytes received into complete server-sent
events, each kept as exactly the bytes that came (joining every event's
`raw`, then `flush()`, gives the stream back byte for byte), and says what
each one is: model output ("content"), an in-band error, the format's
terminator ("done"), OpenAI's usage-only chunk ("usage"), or anything else.
The pipeline commits a stream at its first "content" event and, before
that, can still retry or fail over unseen.

It sits on the time-to-first-token path and on every event of long
streams, so it parses as little as it can: until the first content event
every event is parsed (there are a handful: role chunk, message_start,
content_block_start); after it, an OpenAI event is parsed only when a
byte-level check says it may hold usage, an error or the terminator, and an
Anthropic event only for the few event names that carry usage or errors
(`content_block_delta`, nearly all of a stream, is never parsed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import orjson

from sidecar.llm.formats import Format
from sidecar.llm.usage import Usage, usage_from_object

EventKind = Literal["content", "error", "done", "usage", "other"]


@dataclass(slots=True)
class SseEvent:
    """One complete event: its bytes as received (blank-line terminator included) and its kind."""

    raw: bytes
    kind: EventKind


# An event ends at a blank line: two line ends in a row, a line end being
# CRLF, LF or CR. The groups are atomic so that CRLF is never read as CR and
# then LF (which would end an event after every CRLF line), and a lone-CR pair
# is tried first so that "\r\r\n" reads the same whichever way it was cut.
_BOUNDARY = re.compile(rb"\r\r|(?>\r\n|\n|\r)(?>\r\n|\n|\r)")
_LINE_END = re.compile(rb"\r\n|\n|\r")
# After the first content, an OpenAI `data:` event is parsed only if it may be
# the terminator (`data: [DONE]`, checked at its start) or hold a usage object
# (compatible servers put usage in their last content chunks; Groq under
# x_groq) or an error; an event with an `event:` line first is always parsed.
# A string in the model's text is JSON-escaped, so its quotes never match.
# (One regex with literal-led branches: measured cheaper than the literal
# checks it replaces, and than parsing the chunk.)
_OPENAI_INTEREST = re.compile(rb'"(?:usage|x_groq)"\s*:\s*\{|"error"\s*:\s*[^\sn]')
# OpenAI delta fields that carry model output (reasoning_content and
# reasoning: DeepSeek's and vLLM's reasoning text, streamed like content).
_OPENAI_OUTPUT = (
    "content",
    "refusal",
    "tool_calls",
    "function_call",
    "reasoning_content",
    "reasoning",
)
# A content_block_start with an empty text or thinking block carries no output yet.
_EMPTY_BLOCKS = {"text": "text", "thinking": "thinking"}


class StreamWatcher:
    """Splits a stream into events and keeps what they said: usage, model, error, done."""

    __slots__ = (
        "_anthropic_usage",
        "_buffer",
        "_format",
        "_scan_from",
        "content_started",
        "done",
        "error",
        "model",
        "usage",
    )

    def __init__(self, format: Format) -> None:
        self._format = format
        self._buffer = b""
        self._scan_from = 0
        self._anthropic_usage: dict[str, Any] = {}
        self.content_started = False
        self.usage: Usage | None = None
        self.model: str | None = None
        self.error: Mapping[str, Any] | None = None
        self.done = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events `chunk` completes; an incomplete tail is held until the next feed."""
        if not chunk:
            return []
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[SseEvent] = []
        start = 0
        position = self._scan_from
        plain = b"\r" not in buffer
        while True:
            if plain:
                found = buffer.find(b"\n\n", position)
                if found < 0:
                    break
                end = found + 2
            else:
                match = _BOUNDARY.search(buffer, position)
                if match is None:
                    break
                end = match.end()
                if end == len(buffer) and buffer[-1] == 0x0D and match.group() != b"\r\r":
                    # A CR ending the buffer may be the first half of a CRLF:
                    # wait for the next byte rather than guess.
                    break
            events.append(self._event(buffer[start:end]))
            start = position = end
        self._buffer = buffer[start:]
        # A boundary is at most 4 bytes long: the next search starts where one
        # could begin that the held bytes did not complete.
        self._scan_from = max(0, len(self._buffer) - 3)
        return events

    def flush(self) -> list[SseEvent]:
        """At the end of the stream: the trailing incomplete event, if any (kind "other")."""
        if not self._buffer:
            return []
        raw, self._buffer, self._scan_from = self._buffer, b"", 0
        return [SseEvent(raw, "other")]

    # -- classification -------------------------------------------------

    def _event(self, raw: bytes) -> SseEvent:
        if self._format == "openai":
            kind = self._openai_kind(raw)
        else:
            kind = self._anthropic_kind(raw)
        if kind == "content":
            self.content_started = True
        elif kind == "done":
            self.done = True
        return SseEvent(raw, kind)

    def _openai_kind(self, raw: bytes) -> EventKind:
        if (
            self.content_started
            and raw[:5] == b"data:"
            and b"[DONE]" not in raw[:16]
            and _OPENAI_INTEREST.search(raw) is None
        ):
            return "content"
        name, data = _fields(raw)
        if data is None:
            return "other"
        if data == b"[DONE]":
            return "done"
        document = _json(data)
        if document is None:
            if name != b"error":
                return "other"
            self.error = {"message": data.decode("utf-8", errors="replace")}
            return "error"
        error = document.get("error")
        if error or name == b"error":
            # The OpenAI SDK raises on any chunk whose "error" is truthy.
            if isinstance(error, Mapping):
                self.error = error
            elif error:
                self.error = {"message": str(error)}
            else:  # `event: error` whose data is the error object itself
                self.error = document
            return "error"
        model = document.get("model")
        if self.model is None and isinstance(model, str) and model:
            self.model = model
        usage = document.get("usage")
        if not isinstance(usage, Mapping):
            groq = document.get("x_groq")
            usage = groq.get("usage") if isinstance(groq, Mapping) else None
        if isinstance(usage, Mapping):
            self.usage = usage_from_object("openai", usage) or self.usage
        choices = document.get("choices")
        if isinstance(choices, list):
            if not choices:
                return "usage" if isinstance(document.get("usage"), Mapping) else "other"
            for choice in choices:
                delta = choice.get("delta") if isinstance(choice, Mapping) else None
                if isinstance(delta, Mapping) and any(delta.get(key) for key in _OPENAI_OUTPUT):
                    return "content"
        return "other"

    def _anthropic_kind(self, raw: bytes) -> EventKind:
        first = _first_event_name(raw)
        if first == b"content_block_delta":
            return "content"
        if first == b"ping":
            return "other"
        if first == b"message_stop":
            return "done"
        name, data = _fields(raw)
        document = _json(data) if data is not None else None
        if name is None and document is not None:
            # No `event:` line (not what Anthropic sends): go by the data's type.
            kind = document.get("type")
            name = kind.encode() if isinstance(kind, str) else None
            if name in (b"content_block_delta", b"message_stop"):
                return "content" if name == b"content_block_delta" else "done"
        if name == b"error":
            error = document.get("error") if document is not None else None
            if not isinstance(error, Mapping):
                error = {"message": (data or b"").decode("utf-8", errors="replace")}
            self.error = error
            return "error"
        if document is None:
            return "other"
        if name == b"message_start":
            message = document.get("message")
            if isinstance(message, Mapping):
                model = message.get("model")
                if isinstance(model, str) and model:
                    self.model = model
                self._merge_usage(message.get("usage"))
        elif name == b"message_delta":
            self._merge_usage(document.get("usage"))
        elif name == b"content_block_start":
            block = document.get("content_block")
            if isinstance(block, Mapping):
                field = _EMPTY_BLOCKS.get(str(block.get("type")))
                if field is None or block.get(field):
                    return "content"
        return "other"

    def _merge_usage(self, usage: object) -> None:
        """message_start's usage, updated by message_delta's (its counts are cumulative).

        message_delta brings the final `output_tokens`; input and cache counts
        come from message_start unless message_delta restates them.
        """
        if not isinstance(usage, Mapping):
            return
        stated = {key: value for key, value in usage.items() if value is not None}
        self._anthropic_usage.update(stated)
        self.usage = usage_from_object("anthropic", self._anthropic_usage) or self.usage


def _first_event_name(raw: bytes) -> bytes | None:
    """The event name of the usual `event: NAME` first line, without parsing the rest."""
    if raw[:6] != b"event:":
        return None
    line = _LINE_END.search(raw)
    value = raw[6 : line.start() if line else len(raw)]
    return value[1:] if value[:1] == b" " else value


def _fields(raw: bytes) -> tuple[bytes | None, bytes | None]:
    """The event's `event` field and its data (data lines joined by LF), per the SSE rules."""
    name: bytes | None = None
    data: list[bytes] = []
    for line in _LINE_END.split(raw):
        if not line or line[:1] == b":":
            continue
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value
    return name, (b"\n".join(data) if data else None)


def _json(data: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def stream_error_event(format: Format, message: str, error_type: str, request_id: str) -> bytes:
    """The format's in-band error event, which makes the official SDK raise.

    OpenAI: `data: {"error": {"message", "type", "code": null}}` (the SDK
    raises APIError on a chunk with an error). Anthropic: `event: error` with
    `{"type": "error", "error": {"type", "message"}}` (the SDK raises the
    status error of that type). The request id is in the message text.
    """
    text = f"{message} (request id: {request_id})"
    if format == "openai":
        body = orjson.dumps({"error": {"message": text, "type": error_type, "code": None}})
        return b"data: " + body + b"\n\n"
    body = orjson.dumps(
        {"type": "error", "error": {"type": error_type, "message": text}, "request_id": request_id}
    )
    return b"event: error\ndata: " + body + b"\n\n"


def summary_comment(summary: Mapping[str, Any]) -> bytes:
    """The stream's closing `: mirapi-llm {json}` comment line (SDKs skip comments).

    Compact JSON on one line; a Decimal (the cost) is written as a number.
    """
    return b": mirapi-llm " + orjson.dumps(summary, default=_number) + b"\n\n"


def _number(value: object) -> float:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
