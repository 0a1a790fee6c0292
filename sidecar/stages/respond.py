"""The response the client sees (SPEC §2.9): request id, rescue, extract, debug.

Adds `X-Request-ID` always and `X-Rescued` only when a rescue happened.
A failure answer the sidecar is final about carries `x-should-retry: false`
(SPEC §2.9), and `Stripe-Should-Retry: false`, stripe-python's spelling:
its own refusals always (errors.py, `MirApiError.final`), and an
upstream's failure, or a 502/504 of ours, once the sidecar's own retries
or failover were in force for the call, or X-Deadline ran out. A call with
no retry policy of ours keeps the SDK's retries as they were.
`X-Extract: /json/pointer` answers with just that part of a JSON response.
`X-Proxy-Debug: on` adds `X-MirApi-Attempts`, `X-MirApi-Upstream` and
`Server-Timing`; without it no other proxy header is added.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from sidecar.errors import SHOULD_NOT_RETRY, SHOULD_RETRY_NAMES, MirApiError
from sidecar.exchange import Exchange, Next, Response


class ExtractFailed(MirApiError):
    status = 502
    code = "extract_failed"


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The value at RFC 6901 `pointer` in `document`; KeyError when absent."""
    if pointer == "":
        return document
    node = document
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            if not (token.isascii() and token.isdigit()) or (
                token.startswith("0") and token != "0"
            ):
                raise KeyError(token)
            index = int(token)
            if index >= len(node):
                raise KeyError(token)
            node = node[index]
        elif isinstance(node, dict):
            node = node[token]
        else:
            raise KeyError(token)
    return node


def retried_for_the_client(exchange: Exchange) -> bool:
    """Whether the sidecar's retries or failover were in force for this call."""
    return exchange.policy.retry_count > 0 or len(exchange.targets) > 1


class Respond:
    """Decorates the final response; outermost, so it sees every rescue."""

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        try:
            response = await call_next(exchange)
        except MirApiError as error:
            if error.code == "deadline_exceeded" or retried_for_the_client(exchange):
                error.final = True
            raise
        if exchange.policy.extract is not None and 200 <= response.status < 300:
            response = await self._extract(response, exchange.policy.extract)
        if response.status >= 400 and retried_for_the_client(exchange):
            # The upstream's own x-should-retry (OpenAI and Stripe send one) is
            # about one attempt; ours covers the retries already spent on it.
            response.headers = [h for h in response.headers if h[0] not in SHOULD_RETRY_NAMES]
            response.headers.extend(SHOULD_NOT_RETRY)
        response.headers.append(("x-request-id", exchange.request_id))
        if exchange.rescue is not None:
            response.headers.append(("x-rescued", exchange.rescue))
        if exchange.policy.debug:
            elapsed_ms = (time.monotonic() - exchange.started) * 1000
            response.headers.extend(
                [
                    ("x-mirapi-attempts", str(exchange.attempts)),
                    ("x-mirapi-upstream", exchange.answered_by),
                    ("server-timing", f"mirapi;dur={elapsed_ms:.1f}"),
                ]
            )
        return response

    async def _extract(self, response: Response, pointer: str) -> Response:
        try:
            body = await response.read(self._max_body)
            value = resolve_pointer(orjson.loads(body), pointer)
        except ValueError:
            raise ExtractFailed(
                "X-Extract: the response is not JSON within the size limit"
            ) from None
        except KeyError:
            raise ExtractFailed(f"X-Extract: the response has nothing at {pointer!r}") from None
        headers = [
            (name, value)
            for name, value in response.headers
            if name not in ("content-length", "content-type", "content-encoding", "etag")
        ]
        headers.append(("content-type", "application/json"))
        return Response(status=response.status, headers=headers, body=orjson.dumps(value))
