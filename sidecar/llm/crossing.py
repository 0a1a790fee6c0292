"""An LLM call crossing to an endpoint that speaks the other format (SPEC §10).

The glue between one attempt and the pure translators in
`sidecar.llm.translate`: the request for the endpoint (body, URL), and its
answer for the client (a JSON body, an error body, or a stream, frame by
frame). Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from sidecar.llm.formats import Format
from sidecar.llm.translate import (
    StreamToAnthropic,
    StreamToOpenAI,
    Untranslatable,
    error_to_anthropic,
    error_to_openai,
    request_to_anthropic,
    request_to_openai,
    response_to_anthropic,
    response_to_openai,
    translated_path,
)


@dataclass(frozen=True, slots=True)
class Crossing:
    """A call in `client` format sent to an endpoint speaking `wire`."""

    client: Format
    wire: Format
    model: str

    def request(self, body: bytes, default_max_tokens: int) -> bytes:
        """The client's body as the endpoint's format; Untranslatable naming what cannot go."""
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Untranslatable("body") from None
        if not isinstance(document, dict):
            raise Untranslatable("body")
        if self.wire == "anthropic":
            out = request_to_anthropic(
                document, model=self.model, default_max_tokens=default_max_tokens
            )
        else:
            out = request_to_openai(document, model=self.model)
        return orjson.dumps(out)

    def url(self, target: str) -> str:
        """`target` with its path swapped (`…/v1/chat/completions` <-> `…/v1/messages`)."""
        parts = urlsplit(target)
        return urlunsplit(parts._replace(path=translated_path(parts.path, self.wire)))

    def answer(self, body: bytes) -> bytes | None:
        """A whole JSON answer in the client's format; None when it is not a JSON object.

        Untranslatable when the answer cannot be said in the client's format
        (tool-call arguments that are not a JSON object, cut by a length limit).
        """
        document = _object(body)
        if document is None:
            return None
        if self.client == "openai":
            return orjson.dumps(response_to_openai(document))
        return orjson.dumps(response_to_anthropic(document))

    def error(self, status: int, body: bytes) -> bytes:
        """An error answer in the client's format (a body that is not JSON keeps its status)."""
        document = _object(body) or {}
        if self.client == "openai":
            return orjson.dumps(error_to_openai(status, document))
        return orjson.dumps(error_to_anthropic(status, document))

    def stream(self, request_id: str, include_usage: bool) -> StreamCrossing:
        return StreamCrossing(self, request_id, include_usage)


@dataclass
class StreamCrossing:
    """One streamed answer, translated event by event."""

    crossing: Crossing
    request_id: str
    include_usage: bool
    _to_openai: StreamToOpenAI | None = field(default=None, init=False)
    _to_anthropic: StreamToAnthropic | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        model = self.crossing.model
        # Ids the client's SDK expects to see: chatcmpl-… / msg_….
        if self.crossing.client == "openai":
            chunk_id = f"chatcmpl-{self.request_id}"
            self._to_openai = StreamToOpenAI(model, chunk_id, self.include_usage)
        else:
            self._to_anthropic = StreamToAnthropic(model, f"msg_{self.request_id}")

    def feed(self, raw: bytes) -> list[bytes]:
        """One upstream SSE event (its raw bytes) as the client's frames."""
        name, data = event_fields(raw)
        if data is None:
            return []
        if self._to_anthropic is not None:
            if data.strip() == b"[DONE]":
                return self._to_anthropic.finish()
            parsed = _object(data)
            return self._to_anthropic.feed(parsed) if parsed is not None else []
        assert self._to_openai is not None
        parsed = _object(data)
        return self._to_openai.feed(name or "", parsed) if parsed is not None else []


def event_fields(raw: bytes) -> tuple[str | None, bytes | None]:
    """An SSE event's name and its data (data lines joined), either None when absent."""
    name: str | None = None
    data: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    return name, (b"\n".join(data) if data else None)


def _object(data: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


__all__ = ["Crossing", "StreamCrossing", "Untranslatable", "event_fields"]
