"""Routing: which upstream URLs this request goes to (SPEC §1).

Checked in order: `X-Route-Key`, path mode `/r/NAME/...`, `X-Target-URL`.
Stored routes arrive with the route store; until a route exists under a
name, naming it is `404 route_not_found`.
"""

from __future__ import annotations

from sidecar.errors import NoTarget, NotFound
from sidecar.exchange import Exchange, Next, Response

PATH_MODE_PREFIX = "/r/"


def join_target(target: str, path: str, query: str) -> str:
    """The request's path and query appended to `target` (SPEC §1 joining rule).

    A request path of `/` adds nothing, so `X-Target-URL: https://h/post`
    with `POST /` goes to exactly that URL.
    """
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


class Routing:
    """Sets `exchange.targets`: the primary URL, then any failover URLs."""

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        policy = exchange.policy
        path_mode = split_path_mode(exchange.path)
        if policy.route_key is not None or path_mode is not None:
            name = policy.route_key or (path_mode[0] if path_mode else "")
            raise NotFound(f"no route named {name!r}", code="route_not_found")
        if policy.target_url is None:
            raise NoTarget()
        primary = join_target(policy.target_url, exchange.path, exchange.query)
        failover = tuple(
            join_target(url, exchange.path, exchange.query) for url in policy.failover_urls
        )
        exchange.targets = (primary, *failover)
        return await call_next(exchange)
