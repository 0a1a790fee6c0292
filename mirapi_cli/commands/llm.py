"""`mirapi llm budget set | list | rm`, `mirapi llm spend`: LLM budgets and spend (SPEC §10).

    budget set SCOPE --usd-per-day X   at most X USD a UTC day on SCOPE
    budget list [--json]               every budget
    budget rm SCOPE                    remove a budget (its spend stays)
    spend [--scope S] [--day D] [--json]
                                       per scope and day: spent, reserved,
                                       limit, requests and tokens

SCOPE is `route:NAME`, `key:ID` (a client key's id) or `all`. Budgets live
in the store the sidecar uses (the data dir's SQLite, or Redis with
`--redis`), and a sidecar reads them at every LLM call, so a change holds
for the next call on every sidecar sharing the store: no change notice is
needed. Amounts are USD, decimal (at most 9 places); JSON gives them as
numbers.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mirapi_cli.errors import CliError
from mirapi_cli.options import ConfigOption, DataDirOption, JsonOption
from mirapi_cli.store_access import with_store

if TYPE_CHECKING:
    from rich.console import RenderableType

    from sidecar.store.base import Store
    from sidecar.store.budgets import Budget, BudgetStore, SpendRow

RedisOption = Annotated[
    str | None,
    typer.Option(
        "--redis", metavar="URL", help="Budgets shared through Redis (env: MIRAPI_REDIS)."
    ),
]
ScopeArgument = Annotated[
    str, typer.Argument(metavar="SCOPE", help="route:NAME, key:ID (a client key's id) or all.")
]

app = typer.Typer(help="LLM calls: daily budgets in USD and what was spent.", no_args_is_help=True)
budget_app = typer.Typer(
    help="Budgets: at most so many USD a UTC day per route, client key or in all.",
    no_args_is_help=True,
)
app.add_typer(budget_app, name="budget")


@budget_app.command("set")
def set_budget(
    scope: ScopeArgument,
    usd_per_day: Annotated[
        str,
        typer.Option(
            "--usd-per-day", metavar="X", help="USD a UTC day (decimal, such as 5 or 0.25)."
        ),
    ],
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Set SCOPE's budget (replacing it); in force on every sidecar when it returns."""
    from mirapi_cli import output, propagation
    from sidecar.llm.budgets import BUDGETS_KIND, encode_limit, parse_usd, usd_to_nano

    checked = _scope(scope)
    try:
        usd = parse_usd(usd_per_day, "--usd-per-day")
    except ValueError as error:
        raise CliError(str(error)) from None
    limit = usd_to_nano(usd)

    async def put(store: Store) -> bool:
        await store.set_budget(checked, limit)
        # The sidecars' copy of which scopes have a budget (sidecar/llm/budgets.py).
        await store.record_put(BUDGETS_KIND, checked, encode_limit(limit), True)
        return True

    _, in_force = propagation.change(data_dir, config, redis, (BUDGETS_KIND,), put)
    if as_json:
        output.print_json(
            {"scope": checked, "usd_per_day": usd_number(limit), **propagation.as_json(in_force)}
        )
        return
    propagation.warn(in_force)
    output.say(
        f"budget of {checked} set: {_usd(limit)} USD a day (UTC)" + propagation.report(in_force)
    )


@budget_app.command("list")
def list_budgets(
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List the budgets: scope and USD a day."""
    from mirapi_cli import output

    async def load(store: BudgetStore) -> list[Budget]:
        return await store.list_budgets()

    budgets = with_store(data_dir, config, redis, load)
    rows = [{"scope": b.scope, "usd_per_day": usd_number(b.limit_nano)} for b in budgets]

    def human() -> RenderableType | str:
        if not budgets:
            return "no LLM budgets (set one: mirapi llm budget set SCOPE --usd-per-day X)"
        return output.table(
            ("Scope", "USD a day"),
            ((b.scope, _usd(b.limit_nano)) for b in budgets),
            ids=("Scope",),
        )

    output.listing(rows, as_json=as_json, human=human)


@budget_app.command("rm")
def remove_budget(
    scope: ScopeArgument,
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove SCOPE's budget; what it spent stays in `mirapi llm spend`."""
    from mirapi_cli import output, propagation
    from sidecar.llm.budgets import BUDGETS_KIND

    checked = _scope(scope)

    async def delete(store: Store) -> bool:
        removed = await store.remove_budget(checked)
        mirrored = await store.record_delete(BUDGETS_KIND, checked)
        return removed or mirrored

    removed, in_force = propagation.change(data_dir, config, redis, (BUDGETS_KIND,), delete)
    if not removed:
        raise CliError(f"no budget for {checked!r} (mirapi llm budget list shows them)")
    if as_json:
        output.print_json({"scope": checked, "removed": True, **propagation.as_json(in_force)})
        return
    propagation.warn(in_force)
    output.say(f"budget of {checked} removed" + propagation.report(in_force))


@app.command()
def spend(
    scope: Annotated[
        str | None,
        typer.Option("--scope", metavar="S", help="Only this scope (route:NAME, key:ID, all)."),
    ] = None,
    day: Annotated[
        str | None,
        typer.Option(
            "--day", metavar="YYYY-MM-DD", help="Only this UTC day. Default: every day kept."
        ),
    ] = None,
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """What LLM calls spent, per scope and UTC day (at least the last 31 days)."""
    from mirapi_cli import output
    from sidecar.llm.budgets import check_day, utc_day

    checked = None if scope is None else _scope(scope)
    if day is not None:
        try:
            check_day(day)
        except ValueError as error:
            raise CliError(f"--day: {error}") from None
    today = utc_day(time.time())

    async def load(store: BudgetStore) -> tuple[list[SpendRow], list[Budget]]:
        return await store.spend(checked, day), await store.list_budgets()

    found, budgets = with_store(data_dir, config, redis, load)
    rows = with_idle_budgets(found, budgets, day or today, checked)
    data = [spend_json(row) for row in rows]

    def human() -> RenderableType | str:
        if not rows:
            return "no LLM spend recorded" + ("" if day is None else f" on {day}")
        return output.table(
            ("Day", "Scope", "Spent", "Reserved", "Limit", "Requests", "Input", "Output"),
            (
                (
                    row.day,
                    row.scope,
                    _usd(row.spent_nano),
                    _usd(row.reserved_nano),
                    "" if row.limit_nano is None else _usd(row.limit_nano),
                    row.requests,
                    row.input_tokens,
                    row.output_tokens,
                )
                for row in rows
            ),
            title="LLM spend (USD, by UTC day)",
            ids=("Scope",),
            optional=("Output", "Input", "Reserved"),
        )

    output.listing(data, as_json=as_json, human=human)


def with_idle_budgets(
    rows: list[SpendRow], budgets: list[Budget], day: str, scope: str | None
) -> list[SpendRow]:
    """`rows`, plus a zero row on `day` for each budget (of `scope`) that spent nothing then."""
    from sidecar.store.budgets import SpendRow

    seen = {(row.day, row.scope) for row in rows}
    idle = [
        SpendRow(b.scope, day, 0, 0, b.limit_nano, 0, 0, 0)
        for b in budgets
        if (day, b.scope) not in seen and (scope is None or b.scope == scope)
    ]
    return sorted([*rows, *idle], key=lambda row: (row.day, row.scope))


def spend_json(row: SpendRow) -> dict[str, Any]:
    """One row as `llm spend --json` documents it (SPEC §10)."""
    return {
        "scope": row.scope,
        "day": row.day,
        "spent_usd": usd_number(row.spent_nano),
        "reserved_usd": usd_number(row.reserved_nano),
        "limit_usd": None if row.limit_nano is None else usd_number(row.limit_nano),
        "requests": row.requests,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
    }


def _scope(text: str) -> str:
    from sidecar.llm.budgets import parse_scope

    try:
        return parse_scope(text)
    except ValueError as error:
        raise CliError(str(error)) from None


def _usd(nano: int) -> str:
    from sidecar.llm.budgets import usd_text

    return usd_text(nano)


def usd_number(nano: int) -> int | float:
    """USD as a JSON number: whole USD as an int, else the float whose shortest
    form is the exact decimal (true of every amount below a million USD)."""
    from sidecar.llm.budgets import NANO_PER_USD

    whole, rest = divmod(nano, NANO_PER_USD)
    return whole if rest == 0 else float(_usd(nano))
