"""Local fake upstreams that speak the real wire formats the official SDKs expect.

- `OpenAIFake`: `POST /v1/chat/completions`, a JSON completion, or with
  `"stream": true` an SSE stream of `data: {chunk}` lines ending in
  `data: [DONE]`.
- `AnthropicFake`: `POST /v1/messages`, a JSON message, or a streamed SSE
  with `event:` lines (message_start ... message_stop).
- `StripeFake`: `POST /v1/charges`, form-encoded, answered as Stripe does,
  `Idempotency-Key` included (a repeat with the same parameters replays the
  first answer with `Idempotent-Replayed: true`; other parameters: 400
  `idempotency_error`). It counts the charges it really made.
- Any other path: 200 with a JSON echo of what came (method, path, body).

Streams are sent chunk by chunk with a real pause between chunks, and each
chunk's send time (time.monotonic, the test's clock too) is kept, so a test
can tell that the SDK had the first chunk before the last was sent.

Every fake records what it received and can be told to answer 503 to the
next N requests (`fail_next`) or to all (`always_fail`). The servers run on
an event loop in a thread of their own (`FakeLoop`), since the SDKs under
test are synchronous and block the test's thread while they wait.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Awaitable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web

#: Pause between two streamed chunks: long enough that buffering shows.
GAP = 0.15
TEXT = ["Hel", "lo", " from", " the", " fake"]


@dataclass
class Received:
    """One request as the fake upstream received it."""

    method: str
    path: str
    headers: dict[str, str]
    #: Every header as sent, repeats included (`headers` keeps the last).
    raw_headers: list[tuple[str, str]]
    body: bytes

    def values(self, name: str) -> str:
        """Every value of header `name`, joined with ", " ('' when absent)."""
        return ", ".join(v for k, v in self.raw_headers if k == name.lower())


@dataclass
class Fake:
    """What every fake shares: its address, what it saw, scripted failures."""

    host: str = "127.0.0.1"
    url: str = ""
    seen: list[Received] = field(default_factory=list)
    fail_next: int = 0
    always_fail: bool = False
    #: Cut a stream (abort the connection) after this many chunks.
    cut_after: int | None = None
    #: time.monotonic() of each chunk of the last stream, as it was written.
    sent_at: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.seen.clear()
        self.sent_at.clear()
        self.fail_next = 0
        self.always_fail = False
        self.cut_after = None

    def auth(self) -> list[str]:
        """The Authorization header(s) of every request seen ('' when none)."""
        return [r.values("authorization") for r in self.seen]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Received(
                method=request.method,
                path=request.path_qs,
                headers={k.lower(): v for k, v in request.headers.items()},
                raw_headers=[(k.lower(), v) for k, v in request.headers.items()],
                body=body,
            )
        )
        if self.always_fail or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        return await self.answer(request, body)

    async def answer(self, request: web.Request, body: bytes) -> web.StreamResponse:
        return web.json_response(
            {"method": request.method, "path": request.path_qs, "body": body.decode()}
        )

    async def stream(self, request: web.Request, chunks: list[bytes]) -> web.StreamResponse:
        """Send `chunks` as an SSE body, GAP seconds apart, noting each send time."""
        self.sent_at.clear()
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for index, chunk in enumerate(chunks):
            if index:
                await asyncio.sleep(GAP)
            if self.cut_after is not None and index == self.cut_after:
                assert request.transport is not None
                request.transport.abort()
                return response
            await response.write(chunk)
            self.sent_at.append(time.monotonic())
        await response.write_eof()
        return response


def sse(data: object, event: str | None = None) -> bytes:
    line = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {line}\n\n".encode()


@dataclass
class OpenAIFake(Fake):
    """OpenAI's Chat Completions, JSON and SSE."""

    async def answer(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if request.path != "/v1/chat/completions" or request.method != "POST":
            return await super().answer(request, body)
        call = json.loads(body)
        model = call.get("model", "gpt-test")
        base = {"id": "chatcmpl-fake1", "created": 1_700_000_000, "model": model}
        if not call.get("stream"):
            return web.json_response(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(TEXT)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
                }
            )
        chunks = [
            sse(
                {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
            )
            for piece in TEXT
        ]
        stop = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        return await self.stream(request, [*chunks, sse(stop), sse("[DONE]")])


@dataclass
class AnthropicFake(Fake):
    """Anthropic's Messages API, JSON and SSE with event lines."""

    async def answer(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if request.path != "/v1/messages" or request.method != "POST":
            return await super().answer(request, body)
        call = json.loads(body)
        message = {
            "id": "msg_fake1",
            "type": "message",
            "role": "assistant",
            "model": call.get("model", "claude-test"),
            "stop_sequence": None,
        }
        if not call.get("stream"):
            return web.json_response(
                {
                    **message,
                    "content": [{"type": "text", "text": "".join(TEXT)}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": 3, "output_tokens": 5},
                }
            )
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        }
        deltas = [
            sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
                "content_block_delta",
            )
            for piece in TEXT
        ]
        events = [
            sse({"type": "message_start", "message": start}, "message_start"),
            sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            *deltas,
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 5},
                },
                "message_delta",
            ),
            sse({"type": "message_stop"}, "message_stop"),
        ]
        return await self.stream(request, events)


@dataclass
class StripeFake(Fake):
    """Stripe's `POST /v1/charges`, form-encoded, with its Idempotency-Key rules."""

    charges: int = 0
    #: Idempotency-Key -> (the parameters it came with, the answer given).
    keys: dict[str, tuple[list[tuple[str, str]], dict[str, Any]]] = field(default_factory=dict)

    def reset(self) -> None:
        super().reset()
        self.charges = 0
        self.keys.clear()

    async def answer(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if request.path != "/v1/charges" or request.method != "POST":
            return await super().answer(request, body)
        params = sorted(parse_qsl(body.decode(), keep_blank_values=True))
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in self.keys:
            first_params, first_answer = self.keys[key]
            if first_params != params:
                error = {
                    "type": "idempotency_error",
                    "message": "Keys for idempotent requests can only be used with the"
                    " same parameters they were first used with.",
                }
                return web.json_response({"error": error}, status=400)
            return web.json_response(
                first_answer, headers={"Idempotent-Replayed": "true", "Idempotency-Key": key}
            )
        self.charges += 1
        fields = dict(params)
        charge = {
            "id": f"ch_fake{self.charges}",
            "object": "charge",
            "amount": int(fields.get("amount", "0")),
            "currency": fields.get("currency", "usd"),
            "status": "succeeded",
            "paid": True,
            "livemode": False,
        }
        if key is not None:
            self.keys[key] = (params, charge)
        return web.json_response(charge, headers={"Idempotency-Key": key or ""})


F = TypeVar("F", bound=Fake)


class FakeLoop:
    """An event loop in a daemon thread, serving fakes on loopback addresses."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def run(self, coroutine: Awaitable[Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)  # type: ignore[arg-type]
        return future.result(timeout=10)

    def serve(self, fake: F) -> F:
        """Serve `fake` on its host, on a port the system picks; sets fake.url."""

        async def start() -> int:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", fake.handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, fake.host, 0)
            await site.start()
            self.runners.append(runner)
            server = site._server
            assert isinstance(server, asyncio.Server) and server.sockets
            port: int = server.sockets[0].getsockname()[1]
            return port

        fake.url = f"http://{fake.host}:{self.run(start())}"
        return fake

    def close(self) -> None:
        async def stop() -> None:
            for runner in self.runners:
                await runner.cleanup()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@contextmanager
def fake_loop() -> Iterator[FakeLoop]:
    loop = FakeLoop()
    try:
        yield loop
    finally:
        loop.close()


_keys = itertools.count(1)


def unique(prefix: str) -> str:
    """A fresh idempotency key for this process."""
    return f"{prefix}-{time.time_ns()}-{next(_keys)}"
