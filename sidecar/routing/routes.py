"""Stored routes (SPEC §4): a name, a strategy, ordered endpoints, default policy.

A route is what `X-Route-Key: NAME` or path mode `/r/NAME/...` names. It is
kept in the store as JSON (`encode` / `decode`), read and written by `mirapi
routes`, and exported to / imported from TOML in the same shape:

    [routes.payments]
    strategy = "priority"            # or "race"
    retry = 2                        # X-Retry-Count default
    retry_delay = "200ms"
    timeout = "10s"
    smart_cache = "5m"               # or "5m; serve-fresh"
    circuit_breaker = "on; threshold=3; cooldown=10s"
    secret = "stripe"
    pci_guard = true
    race_writes = false              # let POST/PATCH race (every endpoint gets it)
    llm_max_tokens = 4096            # LLM calls: output tokens a budget reserves
    llm_first_token_timeout = "10s"  # X-LLM-First-Token-Timeout default

    [[routes.payments.endpoints]]
    url = "https://api.stripe.com"
    timeout = "5s"                   # optional, this endpoint only
    headers = { "Stripe-Version" = "2024-06-20" }
    secret = "stripe"                # optional: this endpoint's own secret
    provider = "openai"              # optional: an LLM API, "openai" or "anthropic" (SPEC §10)
    model = "gpt-4o-mini"            # optional, with a provider: the model used here
    model_map = { "claude-haiku-4-5" = "gpt-4o-mini" }  # or per client model
    price = "free"                   # optional: calls here cost nothing (a local model)

Defaults are written exactly as the request headers are (the same parsers
read them), so a route and a header never disagree about what `5m` means.
Request headers override a route's defaults; anything else in the request
stays as it is.

`parse_route` validates one such table (from TOML or from `mirapi routes add`
flags) into a Route, or raises RouteError naming the key at fault;
`routes_from_toml` / `routes_to_toml` read and write whole files, and an
export imports back to equal routes and exports again byte for byte.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

import orjson
import tomli_w

from sidecar.config import parse_rate
from sidecar.durations import parse_duration
from sidecar.errors import BadHeader
from sidecar.headers import DROPPED, PROXY_NAMES, PROXY_PREFIXES
from sidecar.policy import LLM_PROVIDERS, parse_policy, parse_target_url

Headers = tuple[tuple[str, str], ...]

STRATEGIES = ("priority", "race")

#: TOML key / `mirapi routes add` option -> the request header it defaults.
DEFAULT_KEYS = {
    "retry": "X-Retry-Count",
    "retry_delay": "X-Retry-Delay",
    "retry_on": "X-Retry-On",
    "timeout": "X-Timeout",
    "deadline": "X-Deadline",
    "smart_cache": "X-Smart-Cache",
    "circuit_breaker": "X-Circuit-Breaker",
    "llm_first_token_timeout": "X-LLM-First-Token-Timeout",
}

#: The output tokens a budget reserves for an LLM call that names no
#: max_tokens, and what a translated call to Anthropic asks for (SPEC §10).
DEFAULT_LLM_MAX_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream of a route: a base or full URL, joined per SPEC §1."""

    url: str
    #: Sent upstream with every attempt to this endpoint (e.g. an API version).
    headers: Headers = ()
    #: Per-attempt timeout for this endpoint, seconds; None: the route's.
    timeout: float | None = None
    #: The stored secret sent to this endpoint (its host's), before the route's.
    secret: str | None = None
    #: The LLM API this endpoint speaks ("openai" or "anthropic"), or None: not an LLM.
    provider: str | None = None
    #: The model every LLM call to this endpoint uses, whatever the client named.
    model: str | None = None
    #: The client's model name -> this endpoint's (cross-provider failover).
    model_map: tuple[tuple[str, str], ...] = ()
    #: `price = "free"`: calls here cost nothing (a local model).
    free: bool = False


@dataclass(frozen=True, slots=True)
class RouteDefaults:
    """Default policy, as header values: the name is the header it stands for.

    Only the values the route sets are present; each is parsed by the same
    parser as its header (sidecar.policy) when the route is validated.
    """

    #: Header name (as in sidecar.policy's table, e.g. "X-Retry-Count") -> value.
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Route:
    """A named, stored route."""

    name: str
    endpoints: tuple[Endpoint, ...]
    strategy: str = "priority"
    defaults: RouteDefaults = field(default_factory=RouteDefaults)
    #: The name of the secret injected upstream (issue 6), or None.
    secret: str | None = None
    #: The PCI guard (issue 6); a route may switch it off, a header cannot.
    pci_guard: bool = True
    #: Whether a non-idempotent method may race (every endpoint receives it).
    race_writes: bool = False
    #: Per client on this route, as `N/sec|min|hour` (on top of the sidecar's own), or None.
    rate_limit: str | None = None
    #: Output tokens reserved for an LLM call that names no max_tokens (SPEC §10).
    llm_max_tokens: int = DEFAULT_LLM_MAX_TOKENS


def encode(route: Route) -> bytes:
    """The route as stored: compact JSON, the same fields as the TOML."""
    return orjson.dumps(
        {
            "name": route.name,
            "strategy": route.strategy,
            "endpoints": [
                {
                    "url": e.url,
                    "headers": [list(h) for h in e.headers],
                    "timeout": e.timeout,
                    "secret": e.secret,
                    **_llm_fields(e),
                }
                for e in route.endpoints
            ],
            "defaults": [list(h) for h in route.defaults.headers],
            "secret": route.secret,
            "pci_guard": route.pci_guard,
            "race_writes": route.race_writes,
            "rate_limit": route.rate_limit,
            "llm_max_tokens": route.llm_max_tokens,
        }
    )


def _llm_fields(endpoint: Endpoint) -> dict[str, Any]:
    """An endpoint's LLM settings as stored: only those it has, so older routes read alike."""
    fields: dict[str, Any] = {}
    if endpoint.provider is not None:
        fields["provider"] = endpoint.provider
    if endpoint.model is not None:
        fields["model"] = endpoint.model
    if endpoint.model_map:
        fields["model_map"] = [list(pair) for pair in endpoint.model_map]
    if endpoint.free:
        fields["free"] = True
    return fields


def decode(data: bytes) -> Route:
    """The inverse of `encode`; ValueError (or KeyError) on data it did not write."""
    raw = orjson.loads(data)
    endpoints = tuple(
        Endpoint(
            url=str(e["url"]),
            headers=tuple((str(n), str(v)) for n, v in e.get("headers", ())),
            timeout=None if e.get("timeout") is None else float(e["timeout"]),
            secret=e.get("secret"),
            provider=e.get("provider"),
            model=e.get("model"),
            model_map=tuple((str(a), str(b)) for a, b in e.get("model_map", ())),
            free=bool(e.get("free", False)),
        )
        for e in raw["endpoints"]
    )
    return Route(
        name=str(raw["name"]),
        endpoints=endpoints,
        strategy=str(raw.get("strategy", "priority")),
        defaults=RouteDefaults(tuple((str(n), str(v)) for n, v in raw.get("defaults", ()))),
        secret=raw.get("secret"),
        pci_guard=bool(raw.get("pci_guard", True)),
        race_writes=bool(raw.get("race_writes", False)),
        rate_limit=raw.get("rate_limit"),
        llm_max_tokens=int(raw.get("llm_max_tokens", DEFAULT_LLM_MAX_TOKENS)),
    )


# -- validation ----------------------------------------------------------------

#: Path mode (SPEC §1): `/r/NAME/<rest>` names a stored route.
PATH_MODE_PREFIX = "/r/"
#: Route and secret names: safe in a URL path (/r/NAME/), a Redis key and a shell.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: A race sends the request to every endpoint at once; keep that bounded.
MAX_ENDPOINTS = 16

_ROUTE_KEYS = (
    "strategy",
    *DEFAULT_KEYS,
    "secret",
    "pci_guard",
    "race_writes",
    "rate_limit",
    "llm_max_tokens",
    "endpoints",
)
_ENDPOINT_KEYS = ("url", "timeout", "headers", "secret", "provider", "model", "model_map", "price")
#: The most output tokens a route may reserve per LLM call (no model offers more).
MAX_LLM_MAX_TOKENS = 1_000_000
#: RFC 9110 §5.6.2 token: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


#: Builds the RouteError for one place in a definition from a reason.
_Fail = Callable[[str], "RouteError"]


class RouteError(ValueError):
    """A route definition that cannot be used; the message names what is wrong.

    `route` is the route's name, `where` the key at fault as the TOML spells
    it ("retry_delay", "endpoint 2", ...), `reason` the problem. Messages
    never hold header values, URL credentials or query strings.
    """

    def __init__(self, reason: str, *, route: str | None = None, where: str | None = None) -> None:
        prefix = "" if route is None else f"route {route!r}: "
        located = reason if where is None else f"{where}: {reason}"
        super().__init__(prefix + located)
        self.message = prefix + located
        self.route = route
        self.where = where
        self.reason = reason


def parse_route(name: str, table: Mapping[str, Any]) -> Route:
    """Validate one route table (the TOML shape of the module docstring).

    Values are normalised (stripped; `retry` as a plain number, a boolean
    `circuit_breaker` as on/off) so that equal definitions give equal routes.
    """
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise RouteError(
            f"bad route name {_shown(str(name))}: use 1 to 64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )

    def at(where: str | None) -> _Fail:
        return lambda reason: RouteError(reason, route=name, where=where)

    if not isinstance(table, Mapping):
        raise at(None)("must be a table of settings")
    unknown = [key for key in table if key not in _ROUTE_KEYS]
    if unknown:
        known = ", ".join(_ROUTE_KEYS)
        raise at(None)(f"unknown key {_shown(str(unknown[0]))} (known: {known})")

    strategy = table.get("strategy", "priority")
    if strategy not in STRATEGIES:
        raise at("strategy")(f"{_shown(str(strategy))} is not one of {', '.join(STRATEGIES)}")

    endpoints = table.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        raise at("endpoints")("give at least one endpoint (a list of tables with a url)")
    if len(endpoints) > MAX_ENDPOINTS:
        raise at("endpoints")(f"{len(endpoints)} endpoints; at most {MAX_ENDPOINTS}")
    parsed = tuple(
        _parse_endpoint(endpoint, at(f"endpoint {n}")) for n, endpoint in enumerate(endpoints, 1)
    )

    defaults = tuple(
        (header, _default_value(key, table[key], at(key)))
        for key, header in DEFAULT_KEYS.items()
        if key in table
    )

    secret = _secret_name(table.get("secret"), at("secret"))
    pci_guard = table.get("pci_guard", True)
    race_writes = table.get("race_writes", False)
    for key, value in (("pci_guard", pci_guard), ("race_writes", race_writes)):
        if not isinstance(value, bool):
            raise at(key)("must be true or false")
    if race_writes and strategy != "race":
        raise at("race_writes")('only means something with strategy = "race"')
    rate_limit = _rate_limit(table.get("rate_limit"), at("rate_limit"))
    llm_max_tokens = table.get("llm_max_tokens", DEFAULT_LLM_MAX_TOKENS)
    if (
        not isinstance(llm_max_tokens, int)
        or isinstance(llm_max_tokens, bool)
        or not 1 <= llm_max_tokens <= MAX_LLM_MAX_TOKENS
    ):
        raise at("llm_max_tokens")(f"must be a whole number from 1 to {MAX_LLM_MAX_TOKENS}")

    return Route(
        name=name,
        endpoints=parsed,
        strategy=strategy,
        defaults=RouteDefaults(defaults),
        secret=secret,
        pci_guard=pci_guard,
        race_writes=race_writes,
        rate_limit=rate_limit,
        llm_max_tokens=llm_max_tokens,
    )


def _secret_name(value: object, fail: _Fail) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise fail("must be the name of a secret (letters, digits, '.', '_', '-')")
    return value


def _rate_limit(value: object, fail: _Fail) -> str | None:
    """A route's rate limit, normalised like the config key's ("100 / MIN" -> "100/min")."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail('must be a string such as "100/min"')
    try:
        count, _ = parse_rate(value)
    except ValueError as error:
        raise fail(str(error)) from None
    return f"{count}/{value.rpartition('/')[2].strip().lower()}"


def _parse_endpoint(table: object, fail: _Fail) -> Endpoint:
    """One endpoint table; `fail(reason)` builds the RouteError naming it."""
    if not isinstance(table, Mapping):
        raise fail("must be a table with a url")
    unknown = [key for key in table if key not in _ENDPOINT_KEYS]
    if unknown:
        raise fail(f"unknown key {_shown(str(unknown[0]))} (known: {', '.join(_ENDPOINT_KEYS)})")
    url = table.get("url")
    if not isinstance(url, str):
        raise fail("url: give the endpoint's http(s) URL")
    try:
        url = parse_target_url("url", url)
    except BadHeader as error:
        raise fail(f"url {_shown_url(url)}: {error.reason}") from None
    if "@" in url.partition("://")[2].partition("/")[0]:
        # A URL's credentials would show in `routes list` and in logs by host.
        raise fail("url: must not hold credentials (user:password@); use a secret instead")
    timeout = table.get("timeout")
    seconds = None
    if timeout is not None:
        if not isinstance(timeout, str):
            raise fail('timeout: must be a duration string such as "5s"')
        try:
            seconds = parse_duration(timeout)
        except ValueError as error:
            raise fail(f"timeout: {error}") from None
        if seconds <= 0:
            raise fail("timeout: must be longer than zero")
    secret = _secret_name(table.get("secret"), lambda reason: fail(f"secret: {reason}"))
    provider = table.get("provider")
    if provider is not None and provider not in LLM_PROVIDERS:
        raise fail(f"provider: {_shown(str(provider))} is not one of {', '.join(LLM_PROVIDERS)}")
    model = _model_name(table.get("model"), lambda reason: fail(f"model: {reason}"))
    model_map = _model_map(table.get("model_map", {}), fail)
    price = table.get("price")
    if price is not None and price != "free":
        raise fail('price: the only price an endpoint sets is "free" (prices go in [llm.prices])')
    if provider is None and (model is not None or model_map or price is not None):
        raise fail("model, model_map and price need a provider (openai or anthropic)")
    return Endpoint(
        url=url,
        headers=_endpoint_headers(table.get("headers", {}), fail),
        timeout=seconds,
        secret=secret,
        provider=provider,
        model=model,
        model_map=model_map,
        free=price == "free",
    )


def _model_name(value: object, fail: Callable[[str], RouteError]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise fail("must be a model name (a non-empty string)")
    if not value.isascii() or any(ord(c) < 33 or ord(c) == 127 for c in value):
        raise fail("must be printable ASCII without spaces")
    return value


def _model_map(table: object, fail: _Fail) -> tuple[tuple[str, str], ...]:
    """`model_map = { "gpt-4o-mini" = "claude-haiku-4-5" }`: client model -> endpoint model."""
    if not isinstance(table, Mapping):
        raise fail('model_map: must be a table such as { "gpt-4o-mini" = "claude-haiku-4-5" }')
    pairs = []
    for name, value in table.items():
        at_entry = partial(_fail_at, fail, f"model_map: {_shown(str(name))}")
        source = _model_name(name, at_entry)
        target = _model_name(value, at_entry)
        assert source is not None and target is not None
        pairs.append((source, target))
    return tuple(pairs)


def _fail_at(fail: _Fail, where: str, reason: str) -> RouteError:
    return fail(f"{where}: {reason}")


def _endpoint_headers(table: object, fail: _Fail) -> Headers:
    if not isinstance(table, Mapping):
        raise fail('headers: must be a table such as { "Stripe-Version" = "2024-06-20" }')
    seen: set[str] = set()
    headers: list[tuple[str, str]] = []
    for name, value in table.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise fail(f"headers: {_shown(str(name))} is not a header name")
        lower = name.lower()
        if lower.startswith(PROXY_PREFIXES) or lower in PROXY_NAMES:
            raise fail(
                f"headers: {name!r} is a proxy header, stripped before the upstream"
                " (set that policy on the route instead)"
            )
        if lower in DROPPED:
            raise fail(f"headers: {name!r} is hop-by-hop or set by the sidecar; it is never sent")
        if lower in seen:
            raise fail(f"headers: {name!r} is given twice")
        if not isinstance(value, str):
            raise fail(f"headers: the value of {name!r} must be a string")
        value = value.strip()
        if not value.isascii() or any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
            raise fail(f"headers: the value of {name!r} must be printable ASCII")
        seen.add(lower)
        headers.append((name, value))
    return tuple(headers)


def _default_value(key: str, value: object, fail: _Fail) -> str:
    """A default policy value as its header would carry it, checked by that header's parser."""
    header = DEFAULT_KEYS[key]
    if key == "retry" and isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif key == "circuit_breaker" and isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise fail(f"must be a string, as the {header} header would carry it")
    try:
        policy = parse_policy({header.lower(): text})
    except BadHeader as error:
        raise fail(error.reason) from None
    return str(policy.retry_count) if key == "retry" else text


def _shown(text: str) -> str:
    """User input quoted for a message, cut short."""
    return repr(text if len(text) <= 64 else text[:61] + "...")


def _shown_url(url: str) -> str:
    """A URL for a message: without its query (tokens live there) or credentials."""
    head = url.partition("?")[0].partition("#")[0]
    scheme, sep, rest = head.partition("://")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return _shown(scheme + sep + netloc + slash + path if sep else head)


# -- TOML ------------------------------------------------------------------------


def routes_from_toml(text: str) -> list[Route]:
    """Every route in a TOML document, in file order; RouteError on the first problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib's messages give the line and column, never the content.
        raise RouteError(f"not valid TOML: {error}") from None
    unknown = [key for key in document if key != "routes"]
    if unknown:
        raise RouteError(f"unknown top-level key {unknown[0]!r}: routes go in [routes.NAME] tables")
    tables = document.get("routes", {})
    if not isinstance(tables, dict):
        raise RouteError("routes: must be tables, one [routes.NAME] per route")
    return [parse_route(name, table) for name, table in tables.items()]


def routes_to_toml(routes: Sequence[Route]) -> str:
    """The routes as TOML, in the given order, that `routes_from_toml` reads back equal."""
    tables: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.name in tables:
            raise RouteError("given twice", route=route.name)
        tables[route.name] = route_to_table(route)
    return tomli_w.dumps({"routes": tables}) if tables else ""


def route_to_table(route: Route) -> dict[str, Any]:
    """The route's TOML table (without its name): only what differs from the defaults."""
    table: dict[str, Any] = {"strategy": route.strategy}
    keys = {header: key for key, header in DEFAULT_KEYS.items()}
    for header, value in route.defaults.headers:
        key = keys.get(header, header)
        is_count = key == "retry" and value.isascii() and value.isdigit()
        table[key] = int(value) if is_count else value
    if route.secret is not None:
        table["secret"] = route.secret
    if not route.pci_guard:
        table["pci_guard"] = False
    if route.race_writes:
        table["race_writes"] = True
    if route.rate_limit is not None:
        table["rate_limit"] = route.rate_limit
    if route.llm_max_tokens != DEFAULT_LLM_MAX_TOKENS:
        table["llm_max_tokens"] = route.llm_max_tokens
    table["endpoints"] = [_endpoint_table(endpoint) for endpoint in route.endpoints]
    return table


def _endpoint_table(endpoint: Endpoint) -> dict[str, Any]:
    table: dict[str, Any] = {"url": endpoint.url}
    if endpoint.timeout is not None:
        table["timeout"] = format_duration(endpoint.timeout)
    if endpoint.headers:
        table["headers"] = dict(endpoint.headers)
    if endpoint.secret is not None:
        table["secret"] = endpoint.secret
    if endpoint.provider is not None:
        table["provider"] = endpoint.provider
    if endpoint.model is not None:
        table["model"] = endpoint.model
    if endpoint.model_map:
        table["model_map"] = dict(endpoint.model_map)
    if endpoint.free:
        table["price"] = "free"
    return table


_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))


def format_duration(seconds: float) -> str:
    """`seconds` in the largest whole unit that parses back to exactly `seconds`.

    `parse_duration(format_duration(x)) == x` for every finite x >= 0, so an
    exported timeout imports back to the same float.
    """
    for unit, scale in _UNITS:
        count = round(seconds / scale)
        if count >= 1 and parse_duration(f"{count}{unit}") == seconds:
            return f"{count}{unit}"
    # Seconds with the shortest decimal that round-trips (no exponent: the
    # duration syntax has none).
    return format(Decimal(repr(float(seconds))), "f") + "s"


# -- `mirapi routes add` -----------------------------------------------------------


def table_from_flags(
    endpoints: Sequence[str],
    *,
    strategy: str | None = None,
    retry: int | None = None,
    retry_delay: str | None = None,
    retry_on: str | None = None,
    timeout: str | None = None,
    deadline: str | None = None,
    smart_cache: str | None = None,
    circuit_breaker: bool = False,
    breaker_threshold: int | None = None,
    breaker_cooldown: str | None = None,
    secret: str | None = None,
    endpoint_secrets: Sequence[str] = (),
    pci_guard: bool = True,
    race_writes: bool = False,
    rate_limit: str | None = None,
    provider: str | None = None,
    llm_max_tokens: int | None = None,
    llm_first_token_timeout: str | None = None,
) -> dict[str, Any]:
    """The route table that `mirapi routes add` flags describe, for `parse_route`.

    A breaker threshold or cooldown turns the breaker on. `endpoint_secrets`
    pair with `endpoints` by position; "-" (or running out) means none.
    `provider` applies to every endpoint given (a route mixing providers is
    written in TOML).
    """
    if len(endpoint_secrets) > len(endpoints):
        raise RouteError(
            f"{len(endpoint_secrets)} endpoint secrets for {len(endpoints)} endpoints:"
            " give one per endpoint, in order ('-' for none)",
            where="endpoint_secrets",
        )
    table: dict[str, Any] = {
        key: value
        for key, value in (
            ("strategy", strategy),
            ("retry", retry),
            ("retry_delay", retry_delay),
            ("retry_on", retry_on),
            ("timeout", timeout),
            ("deadline", deadline),
            ("smart_cache", smart_cache),
            ("secret", secret),
            ("rate_limit", rate_limit),
            ("llm_max_tokens", llm_max_tokens),
            ("llm_first_token_timeout", llm_first_token_timeout),
        )
        if value is not None
    }
    if circuit_breaker or breaker_threshold is not None or breaker_cooldown is not None:
        parts = ["on"]
        if breaker_threshold is not None:
            parts.append(f"threshold={breaker_threshold}")
        if breaker_cooldown is not None:
            parts.append(f"cooldown={breaker_cooldown}")
        table["circuit_breaker"] = "; ".join(parts)
    if not pci_guard:
        table["pci_guard"] = False
    if race_writes:
        table["race_writes"] = True
    table["endpoints"] = [{"url": url} for url in endpoints]
    for endpoint, name in zip(table["endpoints"], endpoint_secrets, strict=False):
        if name != "-":
            endpoint["secret"] = name
    if provider is not None:
        for endpoint in table["endpoints"]:
            endpoint["provider"] = provider
    return table
