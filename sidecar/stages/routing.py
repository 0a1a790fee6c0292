"""Routing: which upstream URLs this request goes to (SPEC §1, §4).

Checked in order:

1. `X-Route-Key: NAME` — a stored route; the request path is appended as it
   is (a `/r/...` path is not taken apart when the header names the route).
2. Path mode `/r/NAME/<rest>` — the same, with `<rest>` (and the query)
   appended to each endpoint. Needs no proxy header at all, so an SDK can
   use a route by changing only its base URL.
3. `X-Target-URL`, with `X-Failover-URL` after it (`X-LLM-Provider` says
   which LLM API they speak).

Once the targets are known, a `POST …/chat/completions` or `…/messages`
to targets that name a provider becomes an LLM call (`exchange.llm`, SPEC
§10); every other request is proxied as it is.

A name no route has: `404 route_not_found`, once the lookup has looked at
the store again (a route added a moment ago is served, SPEC §11; a
`RouteTable` limits those looks, so a flood of bad names is not a flood of
store reads). Joining follows SPEC §1 for all
three: the request's path (minus `/r/NAME`) and query are appended to the
target's path; a path of `/` adds nothing.

In route mode:

- `exchange.targets` are the route's endpoints in order, and
  `exchange.target_options` their extra headers and timeouts.
- The route's defaults lie *under* the request's headers: the policy is
  parsed again from the defaults overlaid with the request's own policy
  headers, so a header the request sends always wins, and anything the
  request does not say comes from the route.
- An endpoint's timeout replaces the per-attempt timeout (the route's
  default included) unless the request itself sent `X-Timeout`.
- `X-Failover-URL` is refused (`400 bad_header`): a route's backups are its
  own endpoints, and silently dropping the header would hide a mistake.
- A route default the parsers refuse, or an endpoint URL whose host is not
  a host name or IP literal (either would have been refused by `mirapi
  routes add`, so the store holds something it should not) answers `500
  route_invalid` naming the route: it is the sidecar's configuration that
  is wrong, not the client's request. The endpoint's host is never looked up.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sidecar.errors import BadHeader, BadRequest, NoTarget, NotFound, RouteInvalid
from sidecar.exchange import Exchange, Next, Response, TargetOptions
from sidecar.headers import endpoint_headers
from sidecar.llm.call import detect_llm_call
from sidecar.policy import RequestPolicy, parse_policy, url_problem
from sidecar.routing.routes import DEFAULT_KEYS, PATH_MODE_PREFIX, Route

#: The headers a route may give defaults for, lower case.
DEFAULTABLE = frozenset(header.lower() for header in DEFAULT_KEYS.values())


class RouteLookup(Protocol):
    """Where routes are found by name (a `RouteTable`, or a dict-like in tests)."""

    def get(self, name: str) -> Route | None: ...


@runtime_checkable
class RecheckingLookup(RouteLookup, Protocol):
    """A lookup that can look at the store again for a name it lacks (a `RouteTable`)."""

    async def recheck(self, name: str) -> Route | None: ...


class NoRoutes:
    """A lookup with no routes: every name is unknown."""

    def get(self, name: str) -> Route | None:
        return None


def join_target(target: str, path: str, query: str) -> str:
    """The request's path and query appended to `target` (SPEC §1 joining rule).

    A request path of `/` adds nothing, so `X-Target-URL: https://h/post`
    with `POST /` goes to exactly that URL. A path must start with `/` (the
    door sees to it for requests): anything else, such as `@other-host/`,
    would be read as part of the target's host.
    """
    if path and not path.startswith("/"):
        raise BadRequest("the request path must start with '/'")
    base, _, target_query = target.partition("?")
    if path and path != "/":
        base = base.rstrip("/") + path
    joined_query = "&".join(q for q in (target_query, query) if q)
    return f"{base}?{joined_query}" if joined_query else base


def split_path_mode(path: str) -> tuple[str, str] | None:
    """`/r/NAME/rest` -> (NAME, /rest); None when `path` is not path mode."""
    if not path.startswith(PATH_MODE_PREFIX):
        return None
    name, slash, rest = path[len(PATH_MODE_PREFIX) :].partition("/")
    return (name, slash + rest) if name else None


def first_values(exchange: Exchange) -> dict[str, str]:
    """The request's headers, first value of each name (as the edge parsed them)."""
    first: dict[str, str] = {}
    for name, value in exchange.headers:
        first.setdefault(name, value)
    return first


def route_policy(route: Route, request: dict[str, str], default_timeout: float) -> RequestPolicy:
    """The policy from `route`'s defaults overlaid by the request's own headers."""
    merged: dict[str, str] = {}
    for header, value in route.defaults.headers:
        name = header.lower()
        if name not in DEFAULTABLE:
            raise RouteInvalid(f"route {route.name!r} has a default for {header}, which it may not")
        merged[name] = value
    merged.update(request)
    try:
        return parse_policy(merged, default_timeout)
    except BadHeader as error:
        if error.header.lower() in request:
            raise
        raise RouteInvalid(
            f"route {route.name!r} has a bad default for {error.header}: {error.reason}"
        ) from None


def route_targets(
    route: Route, path: str, query: str, request_timeout: bool
) -> tuple[tuple[str, ...], tuple[TargetOptions, ...]]:
    """Each endpoint joined with the request, and what it adds to its attempts."""
    targets = tuple(join_target(e.url, path, query) for e in route.endpoints)
    options = tuple(
        TargetOptions(
            headers=endpoint_headers(e.headers),
            timeout=None if request_timeout else e.timeout,
            provider=e.provider,
            model=e.model,
            model_map=e.model_map,
            free=e.free,
        )
        for e in route.endpoints
    )
    return targets, options


class Routing:
    """Sets `exchange.targets`: a route's endpoints, or the primary then failover URLs."""

    def __init__(self, routes: RouteLookup | None = None) -> None:
        self._routes: RouteLookup = routes if routes is not None else NoRoutes()

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        policy = exchange.policy
        if policy.route_key is not None:
            route = await self._find(policy.route_key)
            self._use_route(exchange, policy.route_key, route)
            exchange.llm = detect_llm_call(exchange)
            return await call_next(exchange)
        path_mode = split_path_mode(exchange.path)
        if path_mode is not None:
            name, exchange.path = path_mode
            self._use_route(exchange, name, await self._find(name))
            exchange.llm = detect_llm_call(exchange)
            return await call_next(exchange)
        if policy.target_url is None:
            raise NoTarget()
        primary = join_target(policy.target_url, exchange.path, exchange.query)
        failover = tuple(
            join_target(url, exchange.path, exchange.query) for url in policy.failover_urls
        )
        exchange.targets = (primary, *failover)
        if policy.llm_provider is not None:
            # Header mode: X-LLM-Provider names what every target speaks.
            llm_target = TargetOptions(provider=policy.llm_provider)
            exchange.target_options = (llm_target,) * len(exchange.targets)
            exchange.llm = detect_llm_call(exchange)
        return await call_next(exchange)

    async def _find(self, name: str) -> Route | None:
        route = self._routes.get(name)
        if route is None and isinstance(self._routes, RecheckingLookup):
            # Only on a miss: the known-route path stays one dict lookup.
            route = await self._routes.recheck(name)
        return route

    def _use_route(self, exchange: Exchange, name: str, route: Route | None) -> None:
        if route is None:
            raise NotFound(f"no route named {name!r}", code="route_not_found")
        if not route.endpoints:
            raise RouteInvalid(f"route {name!r} has no endpoints")
        for number, endpoint in enumerate(route.endpoints, 1):
            # `routes add` refuses such a URL; one stored before it did is
            # refused here, before its host reaches a resolver (cached: cheap).
            problem = url_problem(endpoint.url)
            if problem is not None:
                raise RouteInvalid(f"route {name!r}, endpoint {number}: {problem}")
        if exchange.policy.failover_urls:
            raise BadHeader(
                "X-Failover-URL", f"not with a route: add the URL to route {name!r} instead"
            )
        request = first_values(exchange)
        if route.defaults.headers:
            exchange.policy = route_policy(route, request, exchange.policy.timeout)
        exchange.route = route
        exchange.targets, exchange.target_options = route_targets(
            route, exchange.path, exchange.query, request_timeout="x-timeout" in request
        )
