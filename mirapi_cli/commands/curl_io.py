"""The I/O half of `mirapi curl`: make the call, then write what came back."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import IO, TYPE_CHECKING

import httpx
import orjson

from mirapi_cli.commands.curl import CurlExit, CurlRequest
from mirapi_cli.errors import ExitCode

if TYPE_CHECKING:
    from sidecar.config import Settings

#: Added by the sidecar for X-Proxy-Debug, which --via asks for to tell the
#: sidecar's own errors from upstream answers; not shown as upstream headers.
DEBUG_HEADER_PREFIXES = (b"x-mirapi-", b"server-timing")


class CallFailed(Exception):
    """The call got no upstream answer: the sidecar's error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class CurlResponse:
    """A response whose body has not been read yet."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


async def in_process(
    call: CurlRequest,
    on_attempt: Callable[[str, str, float], None],
    settings: Settings | None = None,
) -> CurlResponse:
    """Run the sidecar's pipeline here, with no sidecar.

    With `settings`, the call uses the store they name (the data dir's
    embedded store, or Redis), so it shares cache, breaker and idempotency
    state with the sidecar, and reads its routes from there (`--route`);
    without, its state lives and dies with it.
    """
    from sidecar import oneshot
    from sidecar.errors import MirApiError
    from sidecar.route_table import RouteTable
    from sidecar.store import store_for

    store = None
    routes = None
    if settings is not None:
        store = store_for(settings)
        try:
            await store.open()
        except MirApiError as error:
            raise CallFailed(error.code, error.message) from None
        if call.route is not None:
            routes = RouteTable(store)
            await routes.refresh()
    request = oneshot.OneShot(call.method, call.headers, call.body, on_attempt=on_attempt)
    if call.route is not None:
        request.path, request.query = call.path_and_query()
    try:
        response, _ = await oneshot.call(request, store=store, routes=routes)
    except MirApiError as error:
        if store is not None:
            await store.close()
        raise CallFailed(error.code, error.message) from None
    except BaseException:
        if store is not None:
            await store.close()
        raise

    async def chunks() -> AsyncIterator[bytes]:
        if response.stream is None:
            yield response.body
            return
        async for chunk in response.stream:
            yield chunk

    async def close() -> None:
        await response.discard()
        if store is not None:
            await store.close()

    reason = _reason(response.status)
    return CurlResponse(response.status, reason, response.headers, chunks(), close)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


#: The client key `--via` calls (curl, replay) send when the call has none.
CLIENT_KEY_ENV = "MIRAPI_KEY"


async def through_sidecar(call: CurlRequest, via: str) -> CurlResponse:
    """Send the call to a running sidecar at `via` (http://host:port or unix:/path)."""
    if via.startswith("unix:"):
        transport = httpx.AsyncHTTPTransport(uds=via.removeprefix("unix:"))
        base = "http://localhost"
    else:
        transport, base = httpx.AsyncHTTPTransport(), via.rstrip("/")
    client = httpx.AsyncClient(transport=transport, timeout=None)
    headers = [*call.headers, ("X-Proxy-Debug", "on")]
    # A sidecar with client keys wants one; take it from the environment
    # (never a flag: shell history) unless the call sets its own.
    key = os.environ.get(CLIENT_KEY_ENV)
    if key and not any(name.lower() == "x-mirapi-key" for name, _ in call.headers):
        headers.append(("X-MirApi-Key", key))
    # A route's path goes on the request line; X-Target-URL carries its own.
    path = call.url if call.route is not None else "/"
    request = client.build_request(
        call.method, base + path, headers=headers, content=call.body or None
    )
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as error:
        await client.aclose()
        raise CallFailed(
            "sidecar_unreachable", f"cannot reach the sidecar at {via}: {error}"
        ) from None
    if _is_sidecar_error(response):
        body = await response.aread()
        await client.aclose()
        problem = orjson.loads(body)["error"]
        raise CallFailed(problem["code"], problem["message"])

    async def close() -> None:
        await response.aclose()
        await client.aclose()

    headers = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in response.headers.raw
        if not k.lower().startswith(DEBUG_HEADER_PREFIXES)
    ]
    return CurlResponse(
        response.status_code, response.reason_phrase, headers, response.aiter_raw(), close
    )


def _is_sidecar_error(response: httpx.Response) -> bool:
    # The call asks for X-Proxy-Debug: an answer that came through the
    # pipeline carries X-MirApi-Attempts; the sidecar's own errors do not.
    return "x-mirapi-attempts" not in response.headers and response.headers.get(
        "content-type", ""
    ).startswith("application/json")


async def deliver(
    response: CurlResponse,
    sink: IO[bytes],
    *,
    include: bool,
    verbose: bool,
    fail: bool,
    silent: bool = False,
) -> int:
    """Write the headers (with -i / -v) and stream the body; return the exit code."""
    status_line = f"HTTP/1.1 {response.status} {response.reason}".rstrip()
    head = [status_line, *(f"{name}: {value}" for name, value in response.headers)]
    if verbose:
        sys.stderr.write("".join(f"< {line}\n" for line in head) + "<\n")
    if fail and response.status >= 400:
        await response.close()
        if not silent:
            sys.stderr.write(f"mirapi: the upstream answered {response.status}\n")
        return CurlExit.HTTP_ERROR
    try:
        if include:
            sink.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        async for chunk in response.chunks:
            sink.write(chunk)
            sink.flush()
    except BrokenPipeError:
        return ExitCode.OK
    except OSError:
        return CurlExit.WRITE_ERROR
    finally:
        await response.close()
    return ExitCode.OK
