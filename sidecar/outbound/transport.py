"""An httpx transport over one shared aiohttp session, lean enough for the hot path.

httpx stays the client API (respx and tests mock it, `mirapi curl` uses it),
but httpx's own transport measured about four times slower than aiohttp's
client on these machines (PERFORMANCE.md). httpx-aiohttp's transport closes
most of that gap; this one also skips what a proxy never needs per request:
re-parsing the URL from text (the httpx URL is already encoded), building a
new `ClientTimeout` each time, and copying headers through a multidict. The
body still streams: nothing here reads it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import lru_cache

import aiohttp
import httpx
import yarl

from sidecar import bounded

_EXTENSIONS = {"http_version": b"HTTP/1.1"}
_CHUNK = 64 * 1024
#: A fixed-length body up to this size is read inside the attempt: it is
#: usually in the buffer already, reading it whole is cheaper than streaming,
#: and a body cut short is then still a retryable failure.
WHOLE_BODY_LIMIT = 64 * 1024


@lru_cache(maxsize=64)
def _client_timeout(seconds: float, connect: float) -> aiohttp.ClientTimeout:
    # Connecting and each body read are bounded; the whole attempt is
    # bounded by the caller (asyncio.timeout), so no total here.
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=seconds)


# A yarl URL holds its text about three times over (parts, caches).
@bounded.memoize(bounded.text_cost(4, bounded.URL_OVERHEAD))
def _yarl_url(url: str) -> yarl.URL:
    return yarl.URL(url, encoded=True)


class _AiohttpBody(httpx.AsyncByteStream):
    """The upstream body as aiohttp receives it; errors surface as raised by aiohttp."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_chunked(_CHUNK):
            yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpStreamingTransport(httpx.AsyncBaseTransport):
    """httpx.Request in, streaming httpx.Response out, over `session`.

    Exceptions are aiohttp's own (or OSError); `sidecar.outbound.upstream` maps them.
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = timeouts.get("read") or 30.0
        response = await self._session.request(
            request.method,
            _yarl_url(str(request.url)),
            headers=request.headers.multi_items(),
            data=request.content or None,
            allow_redirects=False,
            timeout=_client_timeout(timeout, timeouts.get("connect") or timeout),
        )
        length = response.content_length
        if length is not None and length <= WHOLE_BODY_LIMIT:
            try:
                body = await response.read()
            finally:
                response.release()
            return httpx.Response(
                status_code=response.status,
                headers=response.raw_headers,
                content=body,
                request=request,
                extensions=_EXTENSIONS,
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_AiohttpBody(response),
            request=request,
            extensions=_EXTENSIONS,
        )

    async def aclose(self) -> None:
        await self._session.close()
