"""Streamed answers, one stateful translator per response.

`StreamToOpenAI` is fed Anthropic SSE events and returns OpenAI SSE frames;
`StreamToAnthropic` is fed OpenAI chunks and returns Anthropic SSE frames. Both
return complete frames as bytes, ready to write, and expose `content_started`
(the first text or tool-call frame has been produced) so the caller knows when
the answer is committed and a failover is no longer possible.

The indexes are where translators go wrong (LiteLLM and Portkey both shipped
bugs here): Anthropic numbers content blocks (text and tool_use alike), OpenAI
numbers only tool calls. Anthropic -> OpenAI gives each tool_use block the next
tool-call index in order of appearance. OpenAI -> Anthropic gives each text run
and each tool call its own block, in order; since Anthropic blocks are strictly
sequential (start, deltas, stop, then the next) while OpenAI may interleave the
arguments of parallel calls, a later block waits in a buffer while the open tool
call's arguments are still an incomplete JSON object, and is written out once
they close (or at the end).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidecar.llm.translate import shapes
from sidecar.llm.translate.errors import (
    error_to_anthropic,
    error_to_openai,
    status_for_anthropic_type,
    status_for_openai_error,
)
from sidecar.llm.translate.responses import (
    finish_reason_for,
    stop_reason_for,
    usage_to_anthropic,
    usage_to_openai,
)

DONE_FRAME = b"data: [DONE]\n\n"


def _json(value: Any) -> bytes:
    # orjson is ~8x faster on the per-frame path; it refuses integers beyond 64
    # bits, which JSON allows and the stdlib writes.
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def openai_frame(data: dict[str, Any]) -> bytes:
    """One OpenAI SSE frame: `data: {...}` and a blank line."""
    return b"data: " + _json(data) + b"\n\n"


def anthropic_frame(data: dict[str, Any]) -> bytes:
    """One Anthropic SSE frame: the event name (its `type`), the data, a blank line."""
    return b"event: " + str(data["type"]).encode() + b"\ndata: " + _json(data) + b"\n\n"


# -- Anthropic events -> OpenAI chunks ---------------------------------------


class StreamToOpenAI:
    """Anthropic SSE events in, OpenAI chat.completion.chunk frames out."""

    def __init__(
        self, model: str, request_id: str, include_usage: bool, *, created: int | None = None
    ) -> None:
        self.model = model
        self.request_id = request_id
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.content_started = False
        self.done = False
        self._role_sent = False
        self._finish_sent = False
        self._usage: dict[str, Any] = {}
        # Anthropic content-block index -> OpenAI tool-call index
        self._tool_index: dict[int, int] = {}
        # tool_use blocks whose whole input came in content_block_start (some
        # Anthropic-compatible servers do this instead of input_json_delta)
        self._prefilled: set[int] = set()

    def feed(self, event: str, data: dict[str, Any]) -> list[bytes]:
        """Translate one Anthropic event (its SSE event name and parsed data)."""
        if self.done:
            return []
        kind = event if event and event != "message" else shapes.text(data.get("type"))
        if kind == "message_start":
            self._merge_usage(shapes.obj(shapes.obj(data.get("message")).get("usage")))
            return self._role()
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "message_delta":
            self._merge_usage(shapes.obj(data.get("usage")))
            stop_reason = shapes.text(shapes.obj(data.get("delta")).get("stop_reason")) or None
            return self._finish(stop_reason)
        if kind == "message_stop":
            frames = self._finish(None)
            if self.include_usage:
                frames.append(openai_frame(self._envelope([], usage=usage_to_openai(self._usage))))
            frames.append(DONE_FRAME)
            self.done = True
            return frames
        if kind == "error":
            self.done = True
            status = status_for_anthropic_type(
                shapes.text(shapes.obj(data.get("error")).get("type"))
            )
            return [openai_frame(error_to_openai(status, data))]
        # ping, content_block_stop, and event kinds added later carry nothing to translate
        return []

    def _block_start(self, data: dict[str, Any]) -> list[bytes]:
        block = shapes.obj(data.get("content_block"))
        index = shapes.index(data.get("index"))
        if block.get("type") == "text" and shapes.text(block.get("text")):
            return self._content({"content": block["text"]})
        if block.get("type") != "tool_use":
            # thinking and server-tool blocks: not part of a chat.completion
            return []
        tool_index = len(self._tool_index)
        self._tool_index[index] = tool_index
        prefilled = shapes.obj(block.get("input"))
        arguments = json.dumps(prefilled, ensure_ascii=False) if prefilled else ""
        if prefilled:
            self._prefilled.add(index)
        call = {
            "index": tool_index,
            "id": shapes.text(block.get("id")) or f"call_{self.request_id}_{tool_index}",
            "type": "function",
            "function": {"name": shapes.text(block.get("name")), "arguments": arguments},
        }
        return self._content({"tool_calls": [call]})

    def _block_delta(self, data: dict[str, Any]) -> list[bytes]:
        delta = shapes.obj(data.get("delta"))
        index = shapes.index(data.get("index"))
        if delta.get("type") == "text_delta" and shapes.text(delta.get("text")):
            return self._content({"content": delta["text"]})
        if (
            delta.get("type") == "input_json_delta"
            and shapes.text(delta.get("partial_json"))  # the first fragment is often ""
            and index in self._tool_index
            and index not in self._prefilled
        ):
            call = {
                "index": self._tool_index[index],
                "function": {"arguments": delta["partial_json"]},
            }
            return self._content({"tool_calls": [call]})
        return []

    def _merge_usage(self, usage: dict[str, Any]) -> None:
        # message_delta counts are cumulative; an absent or null one keeps the
        # message_start value.
        for key, value in usage.items():
            if value is not None:
                self._usage[key] = value

    def _role(self) -> list[bytes]:
        if self._role_sent:
            return []
        self._role_sent = True
        return [openai_frame(self._envelope([self._choice({"role": "assistant", "content": ""})]))]

    def _content(self, delta: dict[str, Any]) -> list[bytes]:
        frames = self._role()
        self.content_started = True
        frames.append(openai_frame(self._envelope([self._choice(delta)])))
        return frames

    def _finish(self, stop_reason: str | None) -> list[bytes]:
        if self._finish_sent:
            return []
        self._finish_sent = True
        finish_reason = finish_reason_for(stop_reason, called_tools=bool(self._tool_index))
        frames = self._role()
        frames.append(openai_frame(self._envelope([self._choice({}, finish_reason)])))
        return frames

    @staticmethod
    def _choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def _envelope(
        self, choices: list[dict[str, Any]], *, usage: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return chunk


# -- OpenAI chunks -> Anthropic events ---------------------------------------


@dataclass
class _Block:
    """One Anthropic content block in the making: a text run or a tool call."""

    kind: str  # "text" | "tool_use"
    tool_id: str = ""
    name: str = ""
    index: int | None = None  # its Anthropic content-block index, once opened
    closed: bool = False
    # every argument fragment seen, to tell when the JSON object is whole
    arguments: list[str] = field(default_factory=list)
    closing_brace: bool = False  # the last non-blank character seen is "}"
    waiting: list[str] = field(default_factory=list)  # fragments not yet written

    def complete(self) -> bool:
        """A text run can always be closed; a tool call once its arguments parse."""
        if self.kind == "text":
            return True
        # Only a closing brace can complete an object: skip the parse otherwise, so
        # waiting on a long argument string stays cheap.
        if not self.closing_brace:
            return False
        try:
            return isinstance(orjson.loads("".join(self.arguments)), dict)
        except ValueError:
            return False

    def add_arguments(self, fragment: str) -> None:
        self.arguments.append(fragment)
        tail = fragment.rstrip()
        if tail:
            self.closing_brace = tail.endswith("}")


class StreamToAnthropic:
    """OpenAI chat.completion.chunk dicts in, Anthropic SSE frames out."""

    def __init__(self, model: str, request_id: str) -> None:
        self.model = model
        self.request_id = request_id
        self.content_started = False
        self.done = False
        self._started = False
        self._next_index = 0
        self._live: _Block | None = None
        self._waiting: list[_Block] = []
        self._tools: dict[int, _Block] = {}  # OpenAI tool-call index -> block
        self._finish_reason: str | None = None
        self._matched_stop: Any = None  # the stop string, from servers that name it
        self._refused = False
        self._usage: dict[str, Any] = {}

    def feed(self, data: dict[str, Any]) -> list[bytes]:
        """Translate one parsed OpenAI chunk (the JSON after `data: `)."""
        if self.done:
            return []
        error = data.get("error")
        if isinstance(error, dict):
            self.done = True
            return [anthropic_frame(error_to_anthropic(status_for_openai_error(error), data))]
        frames = self._start()
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]
        for choice in shapes.objs(data.get("choices")):
            if shapes.index(choice.get("index")) != 0:
                continue  # n > 1 is refused at the request; never more than one answer
            delta = shapes.obj(choice.get("delta"))
            if shapes.text(delta.get("content")):
                frames += self._add_text(delta["content"])
            if shapes.text(delta.get("refusal")):
                self._refused = True
                frames += self._add_text(delta["refusal"])
            for call in shapes.objs(delta.get("tool_calls")):
                frames += self._tool_call(call)
            if shapes.text(choice.get("finish_reason")):
                self._finish_reason = choice["finish_reason"]
                self._matched_stop = choice.get("stop_reason")
        return frames

    def finish(self) -> list[bytes]:
        """The upstream sent `[DONE]`: close every block, then message_delta, message_stop."""
        if self.done:
            return []
        self.done = True
        frames = self._start()
        if self._live is not None:
            frames += self._close(self._live)
        while self._waiting:
            block = self._waiting.pop(0)
            frames += self._open(block)
            frames += self._close(block)
        stop_reason, stop_sequence = stop_reason_for(
            self._finish_reason,
            called_tools=bool(self._tools),
            refused=self._refused,
            matched=self._matched_stop,
        )
        usage = usage_to_anthropic(self._usage)
        frames.append(
            anthropic_frame(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": usage,
                }
            )
        )
        frames.append(anthropic_frame({"type": "message_stop"}))
        return frames

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        # OpenAI reports usage only at the end; message_delta carries the real counts.
        message: dict[str, Any] = {
            "id": self.request_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [anthropic_frame({"type": "message_start", "message": message})]

    def _add_text(self, text: str) -> list[bytes]:
        live = self._live
        if self._waiting:
            last = self._waiting[-1]
            if last.kind == "text":
                last.waiting.append(text)
            else:
                self._waiting.append(_Block("text", waiting=[text]))
            return []
        if live is not None and live.kind == "text":
            return [self._delta(live, text)]
        if live is not None and not live.complete():
            self._waiting.append(_Block("text", waiting=[text]))
            return []
        frames = self._close(live) if live is not None else []
        block = _Block("text")
        frames += self._open(block)
        frames.append(self._delta(block, text))
        return frames

    def _tool_call(self, call: dict[str, Any]) -> list[bytes]:
        frames: list[bytes] = []
        position = shapes.index(call.get("index"))
        function = shapes.obj(call.get("function"))
        block = self._tools.get(position)
        if block is None:
            block = _Block(
                "tool_use",
                tool_id=shapes.text(call.get("id")) or f"toolu_{self.request_id}_{position}",
                name=shapes.text(function.get("name")),
            )
            self._tools[position] = block
            live = self._live
            if live is None or live.complete():
                if live is not None:
                    frames += self._close(live)
                frames += self._open(block)
            else:
                self._waiting.append(block)
        fragment = shapes.text(function.get("arguments"))
        if not fragment:
            return frames
        block.add_arguments(fragment)
        if block is self._live:
            frames.append(self._delta(block, fragment))
            if self._waiting and block.complete():
                frames += self._close(block)
                frames += self._drain()
        elif block.index is None:
            block.waiting.append(fragment)
        # else: a fragment for a call already closed, i.e. after its JSON object was
        # whole: only whitespace can legally follow, and Anthropic cannot reopen it.
        return frames

    def _drain(self) -> list[bytes]:
        """Write out waiting blocks until one is a tool call still missing arguments."""
        frames: list[bytes] = []
        while self._waiting:
            block = self._waiting.pop(0)
            frames += self._open(block)
            if not block.complete():
                break
            if self._waiting:
                frames += self._close(block)
        return frames

    def _open(self, block: _Block) -> list[bytes]:
        block.index = self._next_index
        self._next_index += 1
        self._live = block
        self.content_started = True
        content: dict[str, Any]
        if block.kind == "text":
            content = {"type": "text", "text": ""}
        else:
            content = {"type": "tool_use", "id": block.tool_id, "name": block.name, "input": {}}
        frames = [
            anthropic_frame(
                {"type": "content_block_start", "index": block.index, "content_block": content}
            )
        ]
        if block.waiting:
            frames.append(self._delta(block, "".join(block.waiting)))
            block.waiting.clear()
        return frames

    def _delta(self, block: _Block, fragment: str) -> bytes:
        delta = (
            {"type": "text_delta", "text": fragment}
            if block.kind == "text"
            else {"type": "input_json_delta", "partial_json": fragment}
        )
        return anthropic_frame(
            {"type": "content_block_delta", "index": block.index, "delta": delta}
        )

    def _close(self, block: _Block) -> list[bytes]:
        if block.closed or block.index is None:
            return []
        block.closed = True
        if self._live is block:
            self._live = None
        return [anthropic_frame({"type": "content_block_stop", "index": block.index})]
