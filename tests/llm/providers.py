"""Fake LLM providers on loopback that speak OpenAI's and Anthropic's real wire formats.

Each fake answers `POST …/chat/completions` (OpenAI) or `POST …/messages`
(Anthropic) in JSON or, with `"stream": true`, as SSE the way the provider
does: OpenAI `data: {chunk}` lines ending in `data: [DONE]` (with a
usage-only chunk when `stream_options.include_usage` is set), Anthropic
`event:`/`data:` pairs from `message_start` to `message_stop`. Usage figures
are fixed (`USAGE`), so a test can check the cost the sidecar computes.

A test scripts what the next calls get with `plan` (consumed in order;
afterwards every call succeeds): a status with the provider's own error
body, an in-band error before the first content, a stream cut after some
content, or a first token that comes late.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TEXT = ["Hel", "lo", " there"]
#: The arguments of the tool call a fake makes when the call offers tools.
TOOL_INPUT = {"city": "Paris"}


def wants_tool(call: dict[str, Any], fmt: str) -> bool:
    """A call offering tools whose last turn is not a tool's result gets a tool call."""
    if not call.get("tools"):
        return False
    last = (call.get("messages") or [{}])[-1]
    if fmt == "openai":
        return bool(last.get("role") != "tool")
    content = last.get("content")
    return not (
        isinstance(content, list)
        and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    )


#: What every answer reports using: 1,000 input tokens (200 of them cached), 50 output.
USAGE = {"input": 1000, "cached": 200, "output": 50}


@dataclass(frozen=True)
class Step:
    """What one call gets: `kind` is ok, status, error_event, cut, or slow."""

    kind: str = "ok"
    status: int = 200
    #: The provider's error `type` / `code` for status and error_event steps.
    error: str = ""
    #: Seconds before the first content (slow), or content events before a cut.
    value: float = 0


def status(code: int, error: str) -> Step:
    return Step("status", code, error)


def error_event(error: str = "overloaded_error") -> Step:
    return Step("error_event", error=error)


def cut(after: int = 1) -> Step:
    return Step("cut", value=after)


def slow(seconds: float) -> Step:
    return Step("slow", value=seconds)


@dataclass
class Call:
    """One call as the fake received it."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Provider:
    """What both fakes share: the address, what came, what comes next."""

    url: str = ""
    calls: list[Call] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    def plan(self, *steps: Step) -> None:
        self.steps = list(steps)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.calls.append(
            Call(request.path, {k.lower(): v for k, v in request.headers.items()}, body)
        )
        step = self.steps.pop(0) if self.steps else Step()
        if step.kind == "status":
            return web.json_response(self.error_body(step.error), status=step.status)
        call = json.loads(body)
        if not call.get("stream"):
            return web.json_response(self.message(call))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events = self.events(call)
        if step.kind == "error_event":
            await response.write(self.head_event(call))
            await response.write(self.error_frame(step.error))
            await response.write_eof()
            return response
        if step.kind == "slow":
            await response.write(self.head_event(call))
            await asyncio.sleep(step.value)
        content_seen = 0
        for event in events:
            if step.kind == "cut" and content_seen >= step.value:
                assert request.transport is not None
                request.transport.abort()
                return response
            await response.write(event)
            if self.is_content(event):
                content_seen += 1
            await asyncio.sleep(0.005)
        await response.write_eof()
        return response

    # Each fake fills these in with its format.
    def error_body(self, error: str) -> dict[str, Any]:
        raise NotImplementedError

    def message(self, call: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def events(self, call: dict[str, Any]) -> list[bytes]:
        raise NotImplementedError

    def head_event(self, call: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def error_frame(self, error: str) -> bytes:
        raise NotImplementedError

    def is_content(self, event: bytes) -> bool:
        raise NotImplementedError


def _data(payload: object) -> bytes:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


@dataclass
class OpenAIProvider(Provider):
    """Chat Completions as api.openai.com answers it."""

    def error_body(self, error: str) -> dict[str, Any]:
        return {"error": {"message": f"fake {error}", "type": error, "param": None, "code": error}}

    def _base(self, call: dict[str, Any]) -> dict[str, Any]:
        return {"id": "chatcmpl-1", "created": 1_700_000_000, "model": call.get("model", "x")}

    def _usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": USAGE["input"],
            "completion_tokens": USAGE["output"],
            "total_tokens": USAGE["input"] + USAGE["output"],
            "prompt_tokens_details": {"cached_tokens": USAGE["cached"]},
        }

    def message(self, call: dict[str, Any]) -> dict[str, Any]:
        if wants_tool(call, "openai"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": call["tools"][0]["function"]["name"],
                            "arguments": json.dumps(TOOL_INPUT),
                        },
                    }
                ],
            }
            finish = "tool_calls"
        else:
            message, finish = {"role": "assistant", "content": "".join(TEXT)}, "stop"
        return {
            **self._base(call),
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": self._usage(),
        }

    def _chunk(self, call: dict[str, Any], delta: dict[str, Any], finish: str | None) -> bytes:
        chunk: dict[str, Any] = {
            **self._base(call),
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if (call.get("stream_options") or {}).get("include_usage"):
            chunk["usage"] = None
        return _data(chunk)

    def head_event(self, call: dict[str, Any]) -> bytes:
        return self._chunk(call, {"role": "assistant", "content": ""}, None)

    def events(self, call: dict[str, Any]) -> list[bytes]:
        frames = [self.head_event(call)]
        if wants_tool(call, "openai"):
            name = call["tools"][0]["function"]["name"]
            arguments = json.dumps(TOOL_INPUT)
            start = {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            frames.append(self._chunk(call, {"tool_calls": [start]}, None))
            for piece in (arguments[:5], arguments[5:]):
                part = {"index": 0, "function": {"arguments": piece}}
                frames.append(self._chunk(call, {"tool_calls": [part]}, None))
            frames.append(self._chunk(call, {}, "tool_calls"))
        else:
            frames += [self._chunk(call, {"content": piece}, None) for piece in TEXT]
            frames.append(self._chunk(call, {}, "stop"))
        if (call.get("stream_options") or {}).get("include_usage"):
            usage = {
                **self._base(call),
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": self._usage(),
            }
            frames.append(_data(usage))
        frames.append(_data("[DONE]"))
        return frames

    def error_frame(self, error: str) -> bytes:
        return _data({"error": {"message": f"fake {error}", "type": error, "code": None}})

    def is_content(self, event: bytes) -> bool:
        content = b'"content": "' in event and b'"content": ""' not in event
        return content or b'"arguments": "' in event


@dataclass
class AnthropicProvider(Provider):
    """The Messages API as api.anthropic.com answers it."""

    def error_body(self, error: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": error, "message": f"fake {error}"}}

    def _usage(self) -> dict[str, Any]:
        return {
            "input_tokens": USAGE["input"] - USAGE["cached"],
            "cache_read_input_tokens": USAGE["cached"],
            "cache_creation_input_tokens": 0,
            "output_tokens": USAGE["output"],
        }

    def message(self, call: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": call.get("model", "x"),
            "content": (
                [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": call["tools"][0]["name"],
                        "input": TOOL_INPUT,
                    }
                ]
                if wants_tool(call, "anthropic")
                else [{"type": "text", "text": "".join(TEXT)}]
            ),
            "stop_reason": "tool_use" if wants_tool(call, "anthropic") else "end_turn",
            "stop_sequence": None,
            "usage": self._usage(),
        }

    def head_event(self, call: dict[str, Any]) -> bytes:
        start = {**self.message(call), "content": [], "stop_reason": None}
        start["usage"] = {**self._usage(), "output_tokens": 1}
        return _event("message_start", {"type": "message_start", "message": start})

    def events(self, call: dict[str, Any]) -> list[bytes]:
        tool = wants_tool(call, "anthropic")
        if tool:
            block = {
                "type": "content_block_start",
                "index": 0,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": call["tools"][0]["name"],
                    "input": {},
                },
            }
            arguments = json.dumps(TOOL_INPUT)
            deltas = [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in (arguments[:5], arguments[5:])
            ]
        else:
            block = {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
            deltas = [{"type": "text_delta", "text": piece} for piece in TEXT]
        frames = [
            self.head_event(call),
            _event("content_block_start", block),
            _event("ping", {"type": "ping"}),
        ]
        for delta in deltas:
            frames.append(
                _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                )
            )
        frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        frames.append(
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": "tool_use" if tool else "end_turn",
                        "stop_sequence": None,
                    },
                    "usage": {"output_tokens": USAGE["output"]},
                },
            )
        )
        frames.append(_event("message_stop", {"type": "message_stop"}))
        return frames

    def error_frame(self, error: str) -> bytes:
        return _event("error", {"type": "error", "error": {"type": error, "message": "fake"}})

    def is_content(self, event: bytes) -> bool:
        return event.startswith(b"event: content_block_delta")


@asynccontextmanager
async def serving(provider: Provider, host: str = "127.0.0.1") -> AsyncIterator[Provider]:
    """Serve `provider` on `host`, a port the system picks (bound, never guessed)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", provider.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server) and server.sockets
    provider.url = f"http://{host}:{server.sockets[0].getsockname()[1]}"
    try:
        yield provider
    finally:
        await runner.cleanup()
