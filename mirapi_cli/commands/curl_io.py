"""The network half of `mirapi curl`: one call, in-process or through a sidecar.

In-process, the target is looked up with `resolver` (the system's, unless
a test puts its own there, so that no name leaves the machine) and vetted
by the egress the caller passes: none for what the user typed, the
config's policy for a redirect hop (`curl_redirect`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

import httpx
import orjson

from mirapi_cli.commands.curl_model import CurlRequest

if TYPE_CHECKING:
    from sidecar.config import Settings
    from sidecar.security.egress import Egress, Resolver

#: The resolver in-process calls use; None: the system's. Tests set their own.
resolver: Resolver | None = None


def open_egress() -> Egress:
    """No policy, as for the URL the user typed (SPEC §3)."""
    from sidecar.security.egress import OpenEgress

    return OpenEgress(resolver)


def policy_egress(settings: Settings, typed_host: str) -> Egress:
    """The config's egress policy for a redirect hop, with the host the user typed allowed."""
    from sidecar.security.egress import EgressPolicy

    return EgressPolicy(
        allow_private=settings.allow_private,
        allow_hosts=(*settings.allow_hosts, typed_host),
        resolver=resolver,
    )


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
    egress: Egress | None = None,
) -> CurlResponse:
    """Run the sidecar's pipeline here, with no sidecar.

    With `settings`, the call uses the store they name (the data dir's
    embedded store, or Redis), so it shares cache, breaker and idempotency
    state with the sidecar, and reads its routes from there (`--route`);
    without, its state lives and dies with it.
    """
    from sidecar import oneshot
    from sidecar.errors import MirApiError
    from sidecar.routing.route_table import RouteTable
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
    request = oneshot.OneShot(
        call.method,
        call.headers,
        call.body,
        on_attempt=on_attempt,
        verify_tls=call.verify_tls,
        connect_timeout=call.connect_timeout,
    )
    if call.route is not None:
        request.path, request.query = call.path_and_query()
    try:
        response, _ = await oneshot.call(
            request, store=store, routes=routes, egress=egress or open_egress()
        )
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
    # As bytes: httpx encodes text values as ASCII, and the sidecar takes
    # (and forwards) UTF-8 values as they are, as curl sends its arguments.
    raw = [(name.encode(), value.encode("utf-8", "surrogateescape")) for name, value in headers]
    request = client.build_request(call.method, base + path, headers=raw, content=call.body or None)
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
