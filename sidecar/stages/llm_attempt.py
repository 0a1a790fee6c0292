"""One attempt of an LLM call at one endpoint: safe streams, failover rules, usage (SPEC §10).

Innermost, just before forward, so every attempt (each retry, each
endpoint) goes through it; a request that is not an LLM call passes with
one attribute check.

Before sending: the body the endpoint gets. The client's bytes as they
came, except a streamed OpenAI-format call without
`stream_options.include_usage` gets it (and the usage-only chunk it causes
is not passed on), `X-LLM-Budget: …; clamp` may lower `max_tokens`, and an
endpoint's `model` / `model_map` names the model. To an endpoint that
speaks the other format the call is translated (`sidecar.llm.crossing`),
and so is its answer, back; one with no model for the call, or that
cannot express it (`n > 1`, ...), is skipped, never sent a changed call.
Every attempt asks for an uncompressed answer: its usage is read.

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
from sidecar.exchange import Exchange, Headers, Next, Response
from sidecar.headers import ANTHROPIC_VERSION
from sidecar.llm.call import LlmCall, model_at
from sidecar.llm.crossing import Crossing, StreamCrossing, Untranslatable
from sidecar.llm.errors import classify_event, classify_status
from sidecar.llm.formats import with_max_tokens, with_model, with_stream_usage
from sidecar.llm.meter import LlmMeter
from sidecar.llm.sse import SseEvent, StreamWatcher, stream_error_event, summary_comment
from sidecar.llm.usage import model_from_body, usage_from_body
from sidecar.routing.routes import DEFAULT_LLM_MAX_TOKENS

#: Read of an error answer to classify it: provider error bodies are small.
ERROR_BODY_LIMIT = 64 * 1024


class LlmAttempt:
    """Shapes each attempt's request and judges its answer, for LLM calls only."""

    def __init__(self, meter: LlmMeter, max_body: int) -> None:
        self._meter = meter
        self._max_body = max_body

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        call = exchange.llm
        if call is None:
            return await call_next(exchange)
        options = exchange.options
        wire = options.provider
        model = model_at(options, call.format, call.request.model)
        if wire is None or model is None:
            raise _skipped(exchange, f"no {call.format} model for the call at this endpoint")
        crossing = None if wire == call.format else Crossing(call.format, wire, model)  # type: ignore[arg-type]
        try:
            self._aim(exchange, call, crossing, model)
        except Untranslatable as refused:
            call.untranslatable.append((wire, refused.field))
            raise _skipped(exchange, f"{wire} cannot express {refused.field!r}") from None
        response = await call_next(exchange)
        call.provider, call.free = wire, options.free
        if not 200 <= response.status < 300:
            return await self._refused(exchange, response, crossing)
        if call.request.stream and _is_event_stream(response):
            return await self._stream(exchange, call, response, crossing)
        return await self._answer(call, response, crossing)

    def _aim(
        self, exchange: Exchange, call: LlmCall, crossing: Crossing | None, model: str
    ) -> None:
        """The attempt's body, URL and headers for the endpoint under way."""
        headers = [h for h in exchange.upstream_headers or [] if h[0] != "accept-encoding"]
        # Read for its usage, so never compressed (the client gets it plain).
        headers.append(("accept-encoding", "identity"))
        if crossing is None:
            exchange.attempt_url = None
            exchange.attempt_body = attempt_body(call, exchange.body, model)
        else:
            route = exchange.route
            max_tokens = route.llm_max_tokens if route is not None else DEFAULT_LLM_MAX_TOKENS
            body = crossing.request(exchange.body, max_tokens)
            if call.max_tokens is not None:
                body = with_max_tokens(crossing.wire, body, call.max_tokens)
            exchange.attempt_body = body
            exchange.attempt_url = crossing.url(exchange.target)
            if crossing.wire == "anthropic" and exchange.header("anthropic-version") is None:
                headers.append(ANTHROPIC_VERSION)
        exchange.attempt_headers = headers

    async def _refused(
        self, exchange: Exchange, response: Response, crossing: Crossing | None
    ) -> Response:
        """An error answer: back to retry/cascade as it is, or moved on at once."""
        try:
            body = await response.read(ERROR_BODY_LIMIT)
        except ValueError:
            return response  # too long to be a provider's error: judged by status alone
        if crossing is not None:
            said = crossing.error(response.status, body)
            response = Response(response.status, _json_headers(response.headers, said), body=said)
        verdict = classify_status(response.status, body)
        if verdict == "quota":
            raise EndpointRefused(
                "llm-quota",
                f"{response.status}: the provider's quota is spent",
                response,
                opens_breaker=True,
            )
        if verdict == "next_endpoint":
            raise EndpointRefused(
                "llm-next-endpoint",
                f"{response.status}: the call is too long for this model",
                response,
                counts_against_host=False,
            )
        if verdict == "retry" and not exchange.policy.retry_on.status_is_retryable(response.status):
            # 408 and the like: retryable for an LLM call whatever X-Retry-On says.
            raise EndpointRefused("timeout", f"{response.status} from the provider", response)
        return response

    async def _answer(
        self, call: LlmCall, response: Response, crossing: Crossing | None
    ) -> Response:
        """A whole JSON answer: its usage and model; passed on as it came, or translated."""
        try:
            body = await response.read(self._max_body)
        except ValueError:
            raise UpstreamFailure("reset", "the answer is over the body limit") from None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict):
            wire = crossing.wire if crossing is not None else call.format
            call.usage = usage_from_body(wire, document)
            call.model = model_from_body(document) or call.model
        if crossing is not None:
            try:
                translated = crossing.answer(body)
            except Untranslatable as refused:
                call.untranslatable.append((crossing.wire, refused.field))
                raise UpstreamFailure("reset", "the answer cannot be translated") from None
            if translated is None:
                raise UpstreamFailure("reset", "the answer is not the provider's JSON")
            return Response(
                response.status, _json_headers(response.headers, translated), body=translated
            )
        return response

    async def _stream(
        self, exchange: Exchange, call: LlmCall, response: Response, crossing: Crossing | None
    ) -> Response:
        """Hold the stream until its first content; fail over unseen before it."""
        assert response.stream is not None
        wire = crossing.wire if crossing is not None else call.format
        watcher = StreamWatcher(wire)
        relay = _Relay(
            call,
            crossing.stream(exchange.request_id, call.request.wants_usage)
            if crossing is not None
            else None,
        )
        chunks = aiter(response.stream)
        held: list[bytes] = []
        timeout = exchange.policy.llm_first_token_timeout
        try:
            async with asyncio.timeout(timeout):
                # A stream that ends whole with no content (a filtered answer) is an answer too.
                while not (watcher.content_started or watcher.done):
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        raise UpstreamFailure(
                            "reset", "the stream closed before its first content"
                        ) from None
                    events = watcher.feed(chunk)
                    if any(event.kind == "error" for event in events):
                        raise _before_content(watcher)
                    held.append(relay.frames(events, watcher, self._meter, exchange))
        except TimeoutError:
            await response.discard()
            raise UpstreamFailure("timeout", f"no first content within {timeout:g}s") from None
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
            stream=self._rest(exchange, call, watcher, relay, b"".join(held), chunks),
            close=response.close,
        )

    async def _rest(
        self,
        exchange: Exchange,
        call: LlmCall,
        watcher: StreamWatcher,
        relay: _Relay,
        head: bytes,
        chunks: AsyncIterator[bytes],
    ) -> AsyncIterator[bytes]:
        """The committed stream: passed on as it comes, never ended clean when cut."""
        try:
            yield head
            try:
                async for chunk in chunks:
                    out = relay.frames(watcher.feed(chunk), watcher, self._meter, exchange)
                    if out:
                        yield out
                tail = relay.frames(watcher.flush(), watcher, self._meter, exchange)
                if tail:
                    yield tail
                cut_reason = None if watcher.done else "the stream ended without its terminator"
            except UpstreamFailure as failure:
                cut_reason = f"the upstream stream broke ({failure.kind})"
            if cut_reason is not None and not call.cut:
                call.cut = True
                yield stream_error_event(
                    call.format,
                    f"{cut_reason}; the answer is incomplete",
                    "api_error",
                    exchange.request_id,
                )
        finally:
            call.usage = call.usage or watcher.usage
            # Settled in the background: a client that went away cancels this
            # generator, and the reservation must still be settled or released.
            self._meter.settle_soon(exchange)


class _Relay:
    """Turns the upstream's events into what the client gets, in its own format.

    The usage-only chunk the sidecar asked for is dropped; the call's figures
    go in a comment just before the terminator; an in-band error after the
    first content marks the stream cut (it reaches the client as the error).
    """

    def __init__(self, call: LlmCall, crossing: StreamCrossing | None) -> None:
        self._call = call
        self._crossing = crossing
        self._hide_usage = (
            crossing is None and call.format == "openai" and not call.request.wants_usage
        )

    def frames(
        self,
        events: list[SseEvent],
        watcher: StreamWatcher,
        meter: LlmMeter,
        exchange: Exchange,
    ) -> bytes:
        call = self._call
        out: list[bytes] = []
        for event in events:
            if event.kind == "usage" and self._hide_usage:
                continue
            if event.kind == "error":
                call.cut = True
            if self._crossing is None:
                frames = [event.raw]
            else:
                frames = self._crossing.feed(event.raw)
            if event.kind == "done":
                call.usage = watcher.usage
                call.model = watcher.model or call.model
                comment = summary_comment(meter.summarize(exchange))
                # Before the client's terminator: the last frame a done event makes.
                frames = [*frames[:-1], comment, *frames[-1:]] if frames else [comment]
            out.extend(frames)
        return b"".join(out)


def _skipped(exchange: Exchange, why: str) -> EndpointRefused:
    """The endpoint cannot take this call: the cascade moves on, nothing is sent."""
    exchange.note_attempt("llm-skipped", 0.0)
    return EndpointRefused("llm-skipped", why, counts_against_host=False)


def _json_headers(headers: Headers, body: bytes) -> Headers:
    """The upstream's headers for a body the sidecar rewrote as JSON."""
    kept = [(n, v) for n, v in headers if n not in ("content-length", "content-type")]
    return [*kept, ("content-type", "application/json"), ("content-length", str(len(body)))]


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
