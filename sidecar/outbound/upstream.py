"""Sending one attempt upstream: the only module that catches httpx exceptions.

httpx is the client API; on the hot path its requests go over an aiohttp
transport (httpx-aiohttp), which measured about four times cheaper than
httpx's own transport on these machines (PERFORMANCE.md). We call the
transport directly with a prepared `httpx.Request`, skipping the client's
redirect, cookie and auth machinery that a proxy must not apply anyway.

Every failure to get a response becomes `UpstreamFailure(kind)` with
Envoy's words (connect-failure, reset, timeout), which the retry stage reads.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx

from sidecar import bounded
from sidecar.errors import BadRequest, UpstreamFailure
from sidecar.exchange import Headers, Response
from sidecar.headers import HOP_BY_HOP
from sidecar.outbound.transport import AiohttpStreamingTransport
from sidecar.security.egress import Egress, VettedResolver

#: aiohttp adds these on its own; a proxy forwards only what the client sent.
_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def _aiohttp_session(
    egress: Egress, max_connections: int, verify_tls: bool = True
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        ssl=verify_tls,
        # The connection goes to the address the policy vetted (SPEC §3).
        resolver=VettedResolver(egress),
        ttl_dns_cache=10,
        keepalive_timeout=30,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        skip_auto_headers=_AUTO_HEADERS,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
    )
    # aiohttp quietly resends an idempotent request once when a kept-alive
    # connection turns out closed; the retry stage alone decides and counts
    # attempts, so that hidden resend is switched off (no public knob exists).
    session._retry_connection = False
    return session


def _failure_kind(exc: BaseException) -> str:
    """Envoy's word for what went wrong: timeout, connect-failure or reset.

    Our aiohttp transport raises aiohttp's own errors; an injected httpx
    transport (respx in unit tests) raises httpx's.
    """
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError | httpx.ConnectError):
        return "connect-failure"
    return "reset"


def _safe_detail(exc: BaseException) -> str:
    # Exception text can echo a URL's credentials; keep only the class name
    # and the OS error text, which never hold request data.
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


class UpstreamClient:
    """One pooled client for the process, keep-alive to every upstream."""

    def __init__(
        self,
        egress: Egress,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 256,
        verify_tls: bool = True,
        connect_timeout: float | None = None,
    ) -> None:
        self._egress = egress
        self._transport = transport
        self._max_connections = max_connections
        # Both for `mirapi curl -k` and `--connect-timeout`; the sidecar keeps the defaults.
        self._verify_tls = verify_tls
        self._connect_timeout = connect_timeout

    def _get_transport(self) -> httpx.AsyncBaseTransport:
        # Built lazily: an aiohttp session must be made inside the running loop.
        if self._transport is None:
            session = _aiohttp_session(self._egress, self._max_connections, self._verify_tls)
            self._transport = AiohttpStreamingTransport(session)
        return self._transport

    async def aclose(self) -> None:
        """Close every pooled connection."""
        if self._transport is not None:
            await self._transport.aclose()

    async def send(
        self, method: str, url: str, headers: Headers, body: bytes, timeout: float
    ) -> Response:
        """One attempt: the response once its headers arrive (the body streams later).

        `timeout` bounds connecting and waiting for the response headers, and
        each later read of the body. Raises UpstreamFailure, or EgressDenied
        before any connection when the target is not allowed.
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        await self._egress.vet(host, port)
        connect = min(timeout, self._connect_timeout or timeout)
        request = _build_request(method, url, headers, body, timeout, connect)
        transport = self._get_transport()
        try:
            async with asyncio.timeout(timeout):
                upstream = await transport.handle_async_request(request)
        except TimeoutError:
            raise UpstreamFailure("timeout", f"no response within {timeout:g}s") from None
        except httpx.UnsupportedProtocol:
            raise BadRequest("the target URL is not a usable http(s) URL") from None
        except (httpx.TransportError, aiohttp.ClientError, OSError) as exc:
            raise UpstreamFailure(_failure_kind(exc), _safe_detail(exc)) from None
        return _response_from(upstream)


#: Parsed target URLs: httpx's pure-Python URL parser was ~5% of a request's
#: CPU, and an app calls the same few URLs over and over. Bounded, since
#: URLs come from requests: by bytes (an httpx.URL keeps its parts and the text).
@bounded.memoize(bounded.text_cost(4, bounded.URL_OVERHEAD))
def _parsed_url(url: str) -> httpx.URL:
    return httpx.URL(url)


#: Bytes no header may carry upstream: a CR or LF would split it (aiohttp refuses).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _header_bytes(headers: Headers) -> list[tuple[bytes, bytes]]:
    """Headers as the bytes sent: UTF-8, the encoding the door read them in.

    Values from the client are UTF-8 text (the door refuses other bytes),
    and so are a route's and a secret's, so the upstream sees the client's
    bytes exactly as they came. (httpx would encode str values as ASCII.)
    """
    encoded: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        try:
            pair = (name.encode(), value.encode())
        except UnicodeEncodeError:
            raise BadRequest(f"header {name!r} cannot be sent upstream (not UTF-8)") from None
        if _CONTROL.search(pair[0]) or _CONTROL.search(pair[1]):
            raise BadRequest(f"header {name!r} holds a control character; it is not sent")
        encoded.append(pair)
    return encoded


def _build_request(
    method: str, url: str, headers: Headers, body: bytes, timeout: float, connect: float
) -> httpx.Request:
    """The request to send; BadRequest, never a crash, for one that cannot be sent.

    The door and the URL parser refuse all of that first: reaching the
    BadRequest means a stored route or secret holds something unsendable.
    """
    extensions: dict[str, Any] = {
        "timeout": {"connect": connect, "read": timeout, "write": timeout, "pool": timeout}
    }
    raw = _header_bytes(headers)
    try:
        url_parsed = _parsed_url(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise BadRequest(f"the target URL cannot be sent upstream ({type(exc).__name__})") from None
    return httpx.Request(
        method, url_parsed, headers=raw, content=body or None, extensions=extensions
    )


def check_sendable(method: str, url: str, headers: Headers) -> None:
    """Raises BadRequest when a request to `url` with `headers` could never be sent."""
    _build_request(method, url, headers, b"", 1.0, 1.0)


def _response_from(upstream: httpx.Response) -> Response:
    decoded = (
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in upstream.headers.raw
    )
    headers = [(name, value) for name, value in decoded if name not in HOP_BY_HOP]
    stream = upstream.stream
    if isinstance(stream, httpx.ByteStream):
        # Read whole by the transport (a small fixed-length body). Not
        # `.content`: that would undo a Content-Encoding the client must see.
        return Response(status=upstream.status_code, headers=headers, body=b"".join(stream))
    assert isinstance(stream, httpx.AsyncByteStream)
    return Response(
        status=upstream.status_code,
        headers=headers,
        stream=_mapped_stream(stream),
        close=upstream.aclose,
    )


async def _mapped_stream(stream: httpx.AsyncByteStream) -> Any:
    """The body as it arrives; a broken stream raises UpstreamFailure('reset')."""
    try:
        async for chunk in stream:
            yield chunk
    except (httpx.TransportError, aiohttp.ClientError, OSError) as exc:
        raise UpstreamFailure(_failure_kind(exc), _safe_detail(exc)) from None
