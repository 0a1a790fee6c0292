"""One attempt of an LLM call at one endpoint: safe streams, failover rules, usage (SPEC §10).

Innermost, just before forward, so every attempt (each retry, each
endpoint) goes through it; a request that is not an LLM call passes with
one attribute check.

Before sending: the body the endpoint gets. The client's bytes as they
came, except a streamed OpenAI-format call without
`stream_options.include_usage` gets it (and the usage-only chunk it causes
is not passed on), `X-LLM-Budget: …; clamp` may lower `max_tokens`, and an
endpoint's `model` / `model_map` names the model. An endpoint that speaks
the other format is skipped (translation comes with cross-provider
failover).

After: an error status is classified by the provider's own error body.
Retryable ones (408, 429, 5xx, 529) go back to the retry and cascade
stages as any failure; a quota error moves to the next endpoint at once
and opens the host's breaker; a context-length error moves on without
counting against the host. A JSON answer is read for its usage.

A stream is committed at its first content delta, not its first byte:
until then an error event, a close, or no content within
`X-LLM-First-Token-Timeout` is a failure the retry and cascade stages
handle unseen by the client. After it, a failure reaches the client as the
format's in-band error and the stream ends without its terminator
(`[DONE]`, `message_stop`), so the SDK raises instead of ending quietly.
Just before the terminator, one SSE comment line gives the call's figures
(`: mirapi-llm {...}`); SDKs skip comment lines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson

from sidecar.errors import EndpointRefused, UpstreamFailure
from sidecar.exchange import Exchange, Next, Response
from sidecar.llm.call import LlmCall, model_at, with_model
from sidecar.llm.errors import classify_event, classify_status
from sidecar.llm.formats import with_max_tokens, with_stream_usage
from sidecar.llm.meter import LlmMeter
from sidecar.llm.sse import StreamWatcher, stream_error_event, summary_comment
from sidecar.llm.usage import model_from_body, usage_from_body

#: Read of an error answer to classify it: provider error bodies are small.
ERROR_BODY_LIMIT = 64 * 1024


class LlmAttempt:
    """Shapes each attempt's body and judges its answer, for LLM calls only."""

    def __init__(self, meter: LlmMeter, max_body: int) -> None:
        self._meter = meter
        self._max_body = max_body

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        call = exchange.llm
        if call is None:
            return await call_next(exchange)
        options = exchange.options
        provider = options.provider
        if provider != call.format:
            exchange.note_attempt("llm-skipped", 0.0)
            raise EndpointRefused(
                "llm-skipped",
                f"the endpoint speaks {provider or 'no LLM API'}, the call {call.format}",
                counts_against_host=False,
            )
        exchange.attempt_body = attempt_body(call, exchange.body, model_at(options, call.request.model))
        response = await call_next(exchange)
        call.provider, call.free = provider, options.free
        if not 200 <= response.status < 300:
            return await self._refused(exchange, response)
        if call.request.stream and _is_event_stream(response):
            return await self._stream(exchange, call, response)
        return await self._answer(call, response)

    async def _refused(self, exchange: Exchange, response: Response) -> Response:
        """An error answer: back to retry/cascade as it is, or moved on at once."""
        try:
            body = await response.read(ERROR_BODY_LIMIT)
        except ValueError:
            return response  # too long to be a provider's error: judged by status alone
        except UpstreamFailure:
            raise
        verdict = classify_status(response.status, body)
        if verdict == "quota":
            raise EndpointRefused(
                "llm-quota", f"{response.status}: the provider's quota is spent",
                response, opens_breaker=True,
            )
        if verdict == "next_endpoint":
            raise EndpointRefused(
                "llm-next-endpoint", f"{response.status}: the call is too long for this model",
                response, counts_against_host=False,
            )
        if verdict == "retry" and not exchange.policy.retry_on.status_is_retryable(
            response.status
        ):
            # 408 and the like: retryable for an LLM call whatever X-Retry-On says.
            raise EndpointRefused("timeout", f"{response.status} from the provider", response)
        return response

    async def _answer(self, call: LlmCall, response: Response) -> Response:
        """A whole JSON answer: its usage and model, the body passed on unchanged."""
        try:
            body = await response.read(self._max_body)
        except ValueError:
            raise UpstreamFailure("reset", "the answer is over the body limit") from None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict):
            call.usage = usage_from_body(call.format, document)
            call.model = model_from_body(document) or call.model
        return response

    async def _stream(self, exchange: Exchange, call: LlmCall, response: Response) -> Response:
        """Hold the stream until its first content; fail over unseen before it."""
        assert response.stream is not None
        watcher = StreamWatcher(call.format)
        hide_usage = call.format == "openai" and not call.request.wants_usage
        chunks = aiter(response.stream)
        held: list[bytes] = []
        timeout = exchange.policy.llm_first_token_timeout
        try:
            async with asyncio.timeout(timeout):
                while not watcher.content_started:
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        raise UpstreamFailure(
                            "reset", "the stream closed before its first content"
                        ) from None
                    for event in watcher.feed(chunk):
                        if event.kind == "error":
                            raise _before_content(watcher)
                        if event.kind == "usage" and hide_usage:
                            continue
                        held.append(event.raw)
        except TimeoutError:
            await response.discard()
            raise UpstreamFailure(
                "timeout", f"no first content within {timeout:g}s"
            ) from None
        except BaseException:
            await response.discard()
            raise
        call.first_token = time.monotonic() - exchange.started
        call.model = watcher.model or call.model
        call.streaming = True
        headers = [(n, v) for n, v in response.headers if n != "content-length"]
        return Response(
            status=response.status,
            headers=headers,
            stream=self._rest(exchange, call, watcher, b"".join(held), chunks, hide_usage),
            close=response.close,
        )

    async def _rest(
        self,
        exchange: Exchange,
        call: LlmCall,
        watcher: StreamWatcher,
        head: bytes,
        chunks: AsyncIterator[bytes],
        hide_usage: bool,
    ) -> AsyncIterator[bytes]:
        """The committed stream: passed on as it comes, never ended clean when cut."""
        try:
            yield head
            try:
                async for chunk in chunks:
                    out = self._passed(exchange, call, watcher, watcher.feed(chunk), hide_usage)
                    if out:
                        yield out
                tail = self._passed(exchange, call, watcher, watcher.flush(), hide_usage)
                if tail:
                    yield tail
                cut_reason = None if watcher.done else "the stream ended without its terminator"
            except UpstreamFailure as failure:
                cut_reason = f"the upstream stream broke ({failure.kind})"
            if cut_reason is not None:
                call.cut = True
                call.usage = call.usage or watcher.usage
                yield stream_error_event(
                    call.format, f"{cut_reason}; the answer is incomplete", "api_error",
                    exchange.request_id,
                )
        finally:
            call.usage = call.usage or watcher.usage
            # Settled in the background: a client that went away cancels this
            # generator, and the reservation must still be settled or released.
            self._meter.settle_soon(exchange)

    def _passed(
        self,
        exchange: Exchange,
        call: LlmCall,
        watcher: StreamWatcher,
        events: list,  # type: ignore[type-arg]
        hide_usage: bool,
    ) -> bytes:
        out: list[bytes] = []
        for event in events:
            if event.kind == "usage" and hide_usage:
                continue
            if event.kind == "done":
                call.usage = watcher.usage
                call.model = watcher.model or call.model
                out.append(summary_comment(self._meter.summarize(exchange)))
            elif event.kind == "error":
                call.cut = True
            out.append(event.raw)
        return b"".join(out)


def attempt_body(call: LlmCall, body: bytes, model: str | None) -> bytes | None:
    """The body this endpoint gets, or None when it is the client's exactly."""
    changed = body
    request = call.request
    if model is not None and model != request.model:
        changed = with_model(changed, model)
    if request.stream and call.format == "openai" and not request.wants_usage:
        changed = with_stream_usage(changed)
    if call.max_tokens is not None and call.max_tokens != request.max_tokens:
        changed = with_max_tokens(call.format, changed, call.max_tokens)
    return None if changed is body else changed


def _is_event_stream(response: Response) -> bool:
    for name, value in response.headers:
        if name == "content-type":
            return value.lower().startswith("text/event-stream")
    return False


def _before_content(watcher: StreamWatcher) -> UpstreamFailure:
    """An in-band error before any content: retried or failed over, never shown."""
    error = watcher.error or {}
    verdict = classify_event(error)
    if verdict == "quota":
        return EndpointRefused("llm-quota", "in-band quota error", opens_breaker=True)
    if verdict == "next_endpoint":
        return EndpointRefused(
            "llm-next-endpoint", "in-band context-length error", counts_against_host=False
        )
    return UpstreamFailure("reset", "an error event before the first content")
