"""HTTP facts the sidecar lives by: which headers are the proxy's, which
describe one hop, which methods may repeat, and how an upstream is named.

Core, not a stage: stages, the store, routes and secrets import these, and
no stage imports another stage for them.
"""

from __future__ import annotations

from collections.abc import Iterable

HeaderList = list[tuple[str, str]]

#: SPEC §2.7: request headers with these prefixes (lower case) are the proxy's
#: own and never reach the upstream.
PROXY_PREFIXES = (
    "x-mirapi-",
    "x-target-",
    "x-retry-",
    "x-proxy-",
    "x-smart-",
    "x-failover-",
    "x-identity-",
    "x-webhook-",
    "x-extract",
    "x-route-",
    "x-circuit-",
    "x-idempotency-",
    "x-llm-",
)
PROXY_NAMES = frozenset({"x-timeout", "x-deadline"})

#: Headers that describe the hop, not the message (RFC 9110 §7.6.1); the
#: ASGI server frames the body to the client itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
#: Set anew for the upstream hop rather than copied from the client's.
RECOMPUTED = frozenset({"host", "content-length"})
DROPPED = PROXY_NAMES | HOP_BY_HOP | RECOMPUTED

#: Anthropic's API version header, sent when the client sent none: with an
#: injected key, and on a call translated to Anthropic's format (SPEC §10).
ANTHROPIC_VERSION = ("anthropic-version", "2023-06-01")

#: RFC 9110 §9.2.2: these may be repeated without changing the outcome.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def is_forwarded(name: str) -> bool:
    """True when a header named `name` (lower case) may reach the upstream as it is."""
    if name in DROPPED:
        return False
    return not (name.startswith("x-") and name.startswith(PROXY_PREFIXES))


def endpoint_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """A route endpoint's headers, lower-cased, without any a client could not send on."""
    lowered = ((name.strip().lower(), value) for name, value in headers)
    return tuple((name, value) for name, value in lowered if name and is_forwarded(name))


def with_endpoint_headers(headers: HeaderList, extra: tuple[tuple[str, str], ...]) -> HeaderList:
    """`headers` with `extra` (already filtered) replacing those of the same names."""
    if not extra:
        return headers
    replaced = {name for name, _ in extra}
    return [(n, v) for n, v in headers if n not in replaced] + list(extra)


def with_secret_headers(headers: HeaderList, injected: tuple[tuple[str, str], ...]) -> HeaderList:
    """`headers` with an injected credential laid over the client's.

    Like `with_endpoint_headers`, and a key injected as `x-api-key`
    (Anthropic's) also drops the client's `Authorization`: the anthropic SDK
    sends its placeholder key as a Bearer token, which must not reach the
    upstream beside the real key.
    """
    if not injected:
        return headers
    replaced = {name for name, _ in injected}
    if "x-api-key" in replaced:
        replaced.add("authorization")
    return [(n, v) for n, v in headers if n not in replaced] + list(injected)


_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def upstream_host(url: str) -> str:
    """How events, metrics, breakers and budgets name an upstream: `host[:port]`
    of an absolute URL, lower case, without credentials, path or query.

    A default port is dropped, so `https://h` and `https://h:443` are one host.
    Plain string slicing: this runs on every request.
    """
    scheme, _, rest = url.partition("://")
    end = len(rest)
    for mark in "/?#":
        index = rest.find(mark)
        if index != -1 and index < end:
            end = index
    authority = rest[:end].rpartition("@")[2].lower()
    default_port = _DEFAULT_PORTS.get(scheme.lower())
    if default_port is not None and authority.endswith(default_port):
        authority = authority[: -len(default_port)]
    return authority
