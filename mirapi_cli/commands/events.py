"""`mirapi events tail`: what the sidecar rescued, refused and saw fail (SPEC §8, §9).

    tail [-n N] [-f] [--json] [--kind K] [--route R]

Without `-f`: the last N (default 20) events that match, then exit. With
`-f`: those, then every new one as it is written, until Ctrl-C (exit 0).
Events live in the store, not in a running sidecar: the command opens the
store the sidecar uses (the data dir's SQLite, or Redis with `--redis`),
so with Redis it shows the events of every sidecar sharing it.

Following is polling: `events_read(after=cursor)` every POLL seconds,
where the cursor is the id of the newest event read so far (of any kind:
a filter must not make the follower read old events again).

Output, by the rule of every listing (mirapi_cli/output.py): on a
terminal a table (`-f`: a rich live table of the newest rows) whose
request ids are never cut; piped, or with `--json`, one JSON object a
line, flushed line by line so that `| jq` or a test sees each event as it
comes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mirapi_cli.errors import CliError
from mirapi_cli.options import ConfigOption, DataDirOption, JsonOption
from mirapi_cli.store_access import with_store

if TYPE_CHECKING:
    from mirapi_cli.output import FittedTable
    from sidecar.observability.events import Event
    from sidecar.store.logs import LogReader

#: Seconds between two reads while following.
POLL = 0.3
#: Events read at a time while following.
PAGE = 1000
#: Rows a live table keeps at least, whatever -n says.
LIVE_ROWS = 20
COLUMNS = (
    "Time (UTC)",
    "Kind",
    "Reason",
    "Request ID",
    "Route",
    "Host",
    "Status",
    "Attempts",
    "Latency ms",
    "Detail",
)
#: Left out of a narrow terminal's table, first to last, to keep ids whole on a line.
OPTIONAL_COLUMNS = ("Latency ms", "Attempts", "Route", "Detail", "Host")

RedisOption = Annotated[
    str | None,
    typer.Option("--redis", metavar="URL", help="Events shared through Redis (env: MIRAPI_REDIS)."),
]

app = typer.Typer(
    help="Watch the sidecar's events: rescues, breaker changes, blocks, failures.",
    no_args_is_help=True,
)

#: Which events to show; None: all of them.
Wanted = Callable[["Event"], bool] | None
Show = Callable[[list["Event"]], None]


@app.command()
def tail(
    lines: Annotated[
        int,
        typer.Option("--lines", "-n", min=0, metavar="N", help="How many recent events first."),
    ] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl-C.")
    ] = False,
    as_json: JsonOption = False,
    kind: Annotated[
        str | None,
        typer.Option(metavar="K", help="Only this kind: rescue, breaker, pci_block, job, ..."),
    ] = None,
    route: Annotated[
        str | None, typer.Option(metavar="R", help="Only events of the stored route R.")
    ] = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print recent events (newest last); with -f, follow new ones as they come."""
    from mirapi_cli import output
    from sidecar.observability.events import KINDS, public_view

    if kind is not None and kind not in KINDS:
        raise CliError(f"--kind: {kind!r} is not one of {', '.join(KINDS)}")
    want = wanted(kind, route)
    if not follow:

        async def read(store: LogReader) -> list[Event]:
            return (await recent(store, lines, want))[0]

        events = with_store(data_dir, config, redis, read)
        filtered = kind is not None or route is not None
        output.listing(
            [public_view(event) for event in events],
            as_json=as_json,
            json_is_lines=True,
            human=lambda: _human(events, filtered),
        )
        return

    try:
        if as_json or not output.is_terminal():
            with_store(data_dir, config, redis, _follower(lines, want, write_json_lines))
        else:
            _follow_live(lines, want, data_dir, config, redis)
    except KeyboardInterrupt:
        # Ctrl-C is how a follower ends: not an error.
        return


# -- reading ------------------------------------------------------------------------


def wanted(kind: str | None, route: str | None) -> Wanted:
    """The filter of --kind and --route (both must hold); None without either."""
    if kind is None and route is None:
        return None

    def check(event: Event) -> bool:
        return (kind is None or event.kind == kind) and (route is None or event.route == route)

    return check


def _kept(rows: Iterable[tuple[str, bytes]], want: Wanted) -> list[Event]:
    events = decode_rows(rows)
    return events if want is None else [event for event in events if want(event)]


def decode_rows(rows: Iterable[tuple[str, bytes]]) -> list[Event]:
    """The events of `rows`; an entry that is not an event is skipped."""
    from sidecar.observability.events import Event

    events = []
    for _, data in rows:
        try:
            events.append(Event.decode(data))
        except ValueError:
            continue
    return events


async def recent(store: LogReader, count: int, want: Wanted) -> tuple[list[Event], str | None]:
    """The last `count` events `want` accepts, and the cursor of the newest stored.

    Filtering reads the whole bounded log (EVENTS_MAX) once: the store
    reads only forward from a cursor or the newest N.
    """
    from sidecar.store.base import EVENTS_MAX

    # One row at least: its id is where following starts.
    limit = 1 if count == 0 else count if want is None else EVENTS_MAX
    rows = await store.events_read(None, limit)
    cursor = rows[-1][0] if rows else None
    events = _kept(rows, want) if count else []
    return events[-count:] if count else [], cursor


async def follow_events(
    store: LogReader,
    cursor: str | None,
    want: Wanted,
    show: Show,
    *,
    poll: float = POLL,
    page: int = PAGE,
) -> None:
    """Show each event written after `cursor`, for as long as the task runs."""
    while True:
        rows = await store.events_read(cursor, page)
        if rows:
            cursor = rows[-1][0]
            events = _kept(rows, want)
            if events:
                show(events)
        if len(rows) < page:
            await asyncio.sleep(poll)


def _follower(count: int, want: Wanted, show: Show) -> Callable[[LogReader], Awaitable[None]]:
    """The whole of `tail -f` on an open store: the recent events, then the new ones."""

    async def run(store: LogReader) -> None:
        events, cursor = await recent(store, count, want)
        if events:
            show(events)
        await follow_events(store, cursor, want, show)

    return run


# -- writing ------------------------------------------------------------------------


def write_json_lines(events: Sequence[Event]) -> None:
    """One JSON object a line on stdout, flushed after each."""
    from mirapi_cli import output
    from sidecar.observability.events import public_view

    output.json_lines(public_view(event) for event in events)


def table_of(events: Iterable[Event], *, title: str | None = None) -> FittedTable:
    """The events as a table fitted to the terminal, oldest first."""
    from mirapi_cli import output

    return output.table(
        COLUMNS,
        (row_of(event) for event in events),
        title=title,
        ids=("Request ID",),
        optional=OPTIONAL_COLUMNS,
    )


def row_of(event: Event) -> tuple[object, ...]:
    """One table row: the time in UTC to the millisecond, empty cells for None."""
    at = datetime.fromtimestamp(event.time, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return (
        at,
        event.kind,
        event.reason,
        event.request_id,
        event.route,
        event.host,
        event.status,
        event.attempts,
        event.latency_ms,
        event.detail,
    )


def _human(events: list[Event], filtered: bool) -> FittedTable | str:
    if not events:
        return "no matching events" if filtered else "no events yet"
    return table_of(events)


def _follow_live(
    count: int, want: Wanted, data_dir: Path | None, config: Path | None, redis: str | None
) -> None:
    """A rich live table of the newest events, redrawn as new ones come."""
    from rich.live import Live

    from mirapi_cli import output

    console = output.stdout()
    # Rows that fit under the header and borders, at least LIVE_ROWS or -n.
    keep = max(count, min(LIVE_ROWS, max(console.height - 6, 1)))
    shown: deque[Event] = deque(maxlen=keep)
    caption = "following; Ctrl-C to stop"

    with Live(table_of(shown, title=caption), console=console, auto_refresh=False) as live:

        def show(events: list[Event]) -> None:
            shown.extend(events)
            live.update(table_of(shown, title=caption), refresh=True)

        with_store(data_dir, config, redis, _follower(count, want, show))
