"""`mirapi routes add | list | show | rm | import | export`: the stored routes (SPEC §4).

    add NAME --endpoint URL...   define a route from flags (--replace to overwrite)
    list [--json]                every route: name, strategy, endpoint URLs
    show NAME [--json]           one route with its default policy
    rm NAME                      remove a route
    import FILE [--replace]      routes from TOML (`-`: stdin), all or nothing
    export [NAME...]             routes as TOML on stdout, that import reads back

Routes live in the store, not in a running sidecar: each command opens the
store the sidecar uses (the data dir's SQLite, or Redis with `--redis`),
so it works whether or not one runs. A change is in force on every live
sidecar sharing the store when the command returns (SPEC §11,
mirapi_cli/propagation.py), which it says. A definition is validated whole before anything is
written (`sidecar.routing.routes.parse_route`); a bad one writes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from mirapi_cli.errors import CliError
from mirapi_cli.options import ConfigOption, DataDirOption, JsonOption
from mirapi_cli.propagation import change
from mirapi_cli.store_access import with_store

if TYPE_CHECKING:
    from rich.console import RenderableType

    from sidecar.routing.routes import Endpoint, Route, RouteError
    from sidecar.store.records import NamedRecordStore

T = TypeVar("T")

RedisOption = Annotated[
    str | None,
    typer.Option("--redis", metavar="URL", help="Routes shared through Redis (env: MIRAPI_REDIS)."),
]
ReplaceOption = Annotated[
    bool, typer.Option("--replace", help="Overwrite routes that already exist.")
]

app = typer.Typer(
    help="Define the routes sidecars serve: named upstreams with default policy.",
    no_args_is_help=True,
)


@app.command()
def add(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The route's name (X-Route-Key, /r/NAME/).")
    ],
    endpoint: Annotated[
        list[str],
        typer.Option(
            "--endpoint",
            metavar="URL",
            help="An upstream base or full URL; repeat for more, in order.",
            show_default=False,
        ),
    ],
    strategy: Annotated[
        str | None,
        typer.Option(metavar="priority|race", help="Endpoints in order (default) or all at once."),
    ] = None,
    retry: Annotated[
        int | None, typer.Option(metavar="N", help="Retries per endpoint (X-Retry-Count).")
    ] = None,
    retry_delay: Annotated[
        str | None, typer.Option(metavar="D", help="First backoff delay (X-Retry-Delay).")
    ] = None,
    retry_on: Annotated[
        str | None, typer.Option(metavar="LIST", help="What is worth a retry (X-Retry-On).")
    ] = None,
    timeout: Annotated[
        str | None, typer.Option(metavar="D", help="Per-attempt timeout (X-Timeout).")
    ] = None,
    deadline: Annotated[
        str | None, typer.Option(metavar="D", help="Budget for the whole call (X-Deadline).")
    ] = None,
    smart_cache: Annotated[
        str | None,
        typer.Option(metavar="TTL", help="Keep 2xx answers to rescue failures (X-Smart-Cache)."),
    ] = None,
    circuit_breaker: Annotated[
        bool,
        typer.Option("--circuit-breaker", help="Fail fast while a host keeps failing."),
    ] = False,
    breaker_threshold: Annotated[
        int | None,
        typer.Option(metavar="N", help="Failures that open the breaker (implies the breaker)."),
    ] = None,
    breaker_cooldown: Annotated[
        str | None,
        typer.Option(metavar="D", help="How long it stays open (implies the breaker)."),
    ] = None,
    secret: Annotated[
        str | None, typer.Option(metavar="NAME", help="The stored secret to inject upstream.")
    ] = None,
    endpoint_secret: Annotated[
        list[str] | None,
        typer.Option(
            "--endpoint-secret",
            metavar="NAME",
            help="The secret of the --endpoint at the same position ('-' for none); repeat.",
            show_default=False,
        ),
    ] = None,
    no_pci_guard: Annotated[
        bool, typer.Option("--no-pci-guard", help="Do not scan bodies for card numbers.")
    ] = False,
    race_writes: Annotated[
        bool,
        typer.Option("--race-writes", help="Let POST/PATCH race too (every endpoint gets them)."),
    ] = False,
    rate_limit: Annotated[
        str | None,
        typer.Option(metavar="N/PER", help="Per client on this route, e.g. 100/min (429 past it)."),
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            metavar="openai|anthropic",
            help="The LLM API every --endpoint speaks: usage, cost, budgets, safe streams.",
        ),
    ] = None,
    llm_max_tokens: Annotated[
        int | None,
        typer.Option(metavar="N", help="Output tokens a budget reserves when a call names none."),
    ] = None,
    llm_first_token_timeout: Annotated[
        str | None,
        typer.Option(metavar="D", help="Fail a stream over with no content by then (LLM routes)."),
    ] = None,
    replace: ReplaceOption = False,
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Add a route (or replace one with --replace); in force on every sidecar when it returns."""
    from mirapi_cli import output, propagation
    from sidecar.routing import routes

    try:
        table = routes.table_from_flags(
            endpoint,
            strategy=strategy,
            retry=retry,
            retry_delay=retry_delay,
            retry_on=retry_on,
            timeout=timeout,
            deadline=deadline,
            smart_cache=smart_cache,
            circuit_breaker=circuit_breaker,
            breaker_threshold=breaker_threshold,
            breaker_cooldown=breaker_cooldown,
            secret=secret,
            endpoint_secrets=endpoint_secret or (),
            pci_guard=not no_pci_guard,
            race_writes=race_writes,
            rate_limit=rate_limit,
            provider=provider,
            llm_max_tokens=llm_max_tokens,
            llm_first_token_timeout=llm_first_token_timeout,
        )
        route = routes.parse_route(name, table)
    except routes.RouteError as error:
        raise CliError(_in_flag_words(error)) from None

    async def put(store: NamedRecordStore) -> bool:
        return await store.record_put("routes", route.name, routes.encode(route), replace)

    saved, in_force = change(data_dir, config, redis, ["routes"], put)
    if not saved:
        raise CliError(f"a route named {name!r} exists already (use --replace to overwrite it)")
    propagation.warn(in_force)
    if as_json:
        data = {"route": name, "strategy": route.strategy, "endpoints": len(route.endpoints)}
        output.print_json(data | propagation.as_json(in_force))
        return
    output.say(
        f"route {name!r} saved: {route.strategy}, {_count(len(route.endpoints), 'endpoint')}"
        + propagation.report(in_force)
    )


@app.command("list")
def list_routes(
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List the routes: name, strategy and endpoints."""
    from mirapi_cli import output

    stored = _load(data_dir, config, redis)
    rows = [
        {"name": r.name, "strategy": r.strategy, "endpoints": [e.url for e in r.endpoints]}
        for r in stored
    ]

    def human() -> RenderableType | str:
        if not rows:
            return "no routes (add one: mirapi routes add NAME --endpoint URL)"
        return output.table(
            ("Name", "Strategy", "Endpoints"),
            ((r["name"], r["strategy"], "\n".join(r["endpoints"])) for r in rows),
            ids=("Name",),
        )

    output.listing(rows, as_json=as_json, human=human)


@app.command()
def show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The route to show.")],
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one route: endpoints and default policy."""
    from mirapi_cli import output

    route = _find(_load(data_dir, config, redis), [name])[0]
    output.emit(route_json(route), as_json=as_json, human=lambda: _route_table(route))


@app.command()
def rm(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The route to remove.")],
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove a route; every sidecar answers 404 for it when this returns."""
    from mirapi_cli import output, propagation

    async def delete(store: NamedRecordStore) -> bool:
        return await store.record_delete("routes", name)

    removed, in_force = change(data_dir, config, redis, ["routes"], delete)
    if not removed:
        raise CliError(f"no route named {name!r}")
    propagation.warn(in_force)
    if as_json:
        output.print_json({"route": name, "removed": True} | propagation.as_json(in_force))
        return
    output.say(f"route {name!r} removed" + propagation.report(in_force))


@app.command("import")
def import_routes(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="TOML with [routes.NAME] tables; - for stdin.")
    ],
    replace: ReplaceOption = False,
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Import routes from TOML: every route is checked first; a bad one imports none."""
    from mirapi_cli import output, propagation
    from sidecar.routing import routes

    try:
        incoming = routes.routes_from_toml(_read(file))
    except routes.RouteError as error:
        raise CliError(f"{_source(file)}: {error.message}") from None
    if not incoming:
        if as_json:
            output.print_json({"imported": []})
            return
        output.say(f"{_source(file)} defines no routes; nothing imported")
        return
    written, in_force = change(
        data_dir, config, redis, ["routes"], lambda store: _put_all(store, incoming, replace)
    )
    propagation.warn(in_force)
    if as_json:
        imported = [route.name for route in written]
        output.print_json({"imported": imported} | propagation.as_json(in_force))
        return
    names = ", ".join(route.name for route in written)
    output.say(f"imported {_count(len(written), 'route')}: {names}" + propagation.report(in_force))


@app.command()
def export(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[NAME]...", help="Only these routes (default: all)."),
    ] = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print routes as TOML, which `mirapi routes import` reads back unchanged."""
    from mirapi_cli import output
    from sidecar.routing import routes

    stored = _load(data_dir, config, redis)
    chosen = _find(stored, names) if names else stored
    output.write_lines([routes.routes_to_toml(chosen)] if chosen else [])


# -- the store -----------------------------------------------------------------


def _load(data_dir: Path | None, config: Path | None, redis: str | None) -> list[Route]:
    """Every stored route, by name."""
    from mirapi_cli import output
    from sidecar.routing import routes

    async def load(store: NamedRecordStore) -> dict[str, bytes]:
        return (await store.records_load("routes"))[1]

    found: list[Route] = []
    for name, data in sorted(with_store(data_dir, config, redis, load).items()):
        try:
            found.append(routes.decode(data))
        except (ValueError, KeyError, TypeError):
            output.note(f"mirapi: warning: route {name!r} in the store is unreadable; skipped")
    return found


def _find(stored: Sequence[Route], names: Sequence[str]) -> list[Route]:
    """The routes named, in the order named; an unknown name is an error."""
    by_name = {route.name: route for route in stored}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise CliError(f"no route named {missing[0]!r}")
    return [by_name[name] for name in names]


async def _put_all(
    store: NamedRecordStore, incoming: Sequence[Route], replace: bool
) -> list[Route]:
    """Write every route, or none: existing names refuse the lot unless `replace`."""
    from sidecar.routing import routes

    _, before = await store.records_load("routes")
    taken = [route.name for route in incoming if route.name in before]
    if taken and not replace:
        raise CliError(
            f"route {taken[0]!r} exists already; nothing imported (use --replace to overwrite)"
        )
    written: list[Route] = []
    for route in incoming:
        if not await store.record_put("routes", route.name, routes.encode(route), replace):
            # Someone added this name since the check: put back what was.
            await _undo(store, written, before)
            raise CliError(f"route {route.name!r} was added meanwhile; nothing imported")
        written.append(route)
    return written


async def _undo(
    store: NamedRecordStore, written: Sequence[Route], before: dict[str, bytes]
) -> None:
    for route in written:
        if route.name in before:
            await store.record_put("routes", route.name, before[route.name], True)
        else:
            await store.record_delete("routes", route.name)


# -- input and rendering ---------------------------------------------------------------


def _read(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot read {file}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"cannot read {file}: not UTF-8 text") from None


def _source(file: str) -> str:
    return "stdin" if file == "-" else file


#: TOML keys as `mirapi routes add` spells them, for messages in the user's words.
_FLAGS = {
    "strategy": "--strategy",
    "retry": "--retry",
    "retry_delay": "--retry-delay",
    "retry_on": "--retry-on",
    "timeout": "--timeout",
    "deadline": "--deadline",
    "smart_cache": "--smart-cache",
    "circuit_breaker": "--circuit-breaker",
    "secret": "--secret",
    "endpoint_secrets": "--endpoint-secret",
    "race_writes": "--race-writes",
    "rate_limit": "--rate-limit",
    "llm_max_tokens": "--llm-max-tokens",
    "llm_first_token_timeout": "--llm-first-token-timeout",
    "endpoints": "--endpoint",
}


def _in_flag_words(error: RouteError) -> str:
    flag = _FLAGS.get(error.where or "")
    return f"{flag}: {error.reason}" if flag else error.message


def route_json(route: Route) -> dict[str, Any]:
    """`routes show --json`: every field, defaults by their TOML keys as header values."""
    from sidecar.routing.routes import DEFAULT_KEYS, format_duration

    keys = {header: key for key, header in DEFAULT_KEYS.items()}
    return {
        "name": route.name,
        "strategy": route.strategy,
        "endpoints": [
            {
                "url": e.url,
                "headers": dict(e.headers),
                "timeout": None if e.timeout is None else format_duration(e.timeout),
                "secret": e.secret,
                **_llm_json(e),
            }
            for e in route.endpoints
        ],
        "defaults": {keys.get(header, header): value for header, value in route.defaults.headers},
        "secret": route.secret,
        "pci_guard": route.pci_guard,
        "race_writes": route.race_writes,
        "rate_limit": route.rate_limit,
        **({"llm_max_tokens": route.llm_max_tokens} if _is_llm(route) else {}),
    }


def _is_llm(route: Route) -> bool:
    return any(endpoint.provider is not None for endpoint in route.endpoints)


def _llm_json(endpoint: Endpoint) -> dict[str, Any]:
    """An LLM endpoint's settings (SPEC §10); nothing for any other endpoint."""
    if endpoint.provider is None:
        return {}
    return {
        "provider": endpoint.provider,
        "model": endpoint.model,
        "model_map": dict(endpoint.model_map),
        "price": "free" if endpoint.free else None,
    }


def _route_table(route: Route) -> RenderableType:
    from mirapi_cli import output
    from sidecar.routing.routes import DEFAULT_KEYS, format_duration

    rows: dict[str, object] = {"name": route.name, "strategy": route.strategy}
    for n, e in enumerate(route.endpoints, 1):
        extras = [f"timeout {format_duration(e.timeout)}"] if e.timeout is not None else []
        extras += [f"{name}: {value}" for name, value in e.headers]
        extras += [f"secret {e.secret}"] if e.secret is not None else []
        extras += [f"provider {e.provider}"] if e.provider is not None else []
        extras += [f"model {e.model}"] if e.model is not None else []
        extras += [f"model {a} -> {b}" for a, b in e.model_map]
        extras += ["price free"] if e.free else []
        rows[f"endpoint {n}"] = "\n".join([e.url, *(f"  {x}" for x in extras)])
    keys = {header: key for key, header in DEFAULT_KEYS.items()}
    for header, value in route.defaults.headers:
        rows[f"{keys.get(header, header)} ({header})"] = value
    rows["secret"] = route.secret or "none"
    rows["pci guard"] = "on" if route.pci_guard else "off"
    if route.rate_limit is not None:
        rows["rate limit"] = f"{route.rate_limit} per client"
    if route.strategy == "race":
        rows["race writes"] = "yes" if route.race_writes else "no (idempotent methods only)"
    return output.key_value_table(rows)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
