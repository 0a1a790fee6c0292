"""Everything the CLI writes: one rich Console for stdout, one for stderr.

A command builds a result (plain data) and hands it to `emit`, which prints
either JSON (`--json`: only JSON on stdout, so it pipes into jq) or a human
rendering. Colour follows rich's rules: none when the stream is not a TTY,
none when `NO_COLOR` is set (https://no-color.org), forced by `FORCE_COLOR`.

Listing commands (events tail, jobs list, keys list, routes list, secrets
list, stats) follow one rule, `listing` (SPEC §9):

    --json              the documented JSON, whatever stdout is
    stdout a terminal   a table (`table`): nothing in it is ever cut
    stdout piped        JSON lines: one object a line, every field whole

A table never cuts what a user must copy: every column folds a value too
long for its width onto the next line (overflow="fold") rather than
ending it with "…". Id columns (request, job, key, event ids; names) stay
on one line whenever the terminal is wide enough for that; to make room,
the columns a command marks optional are left out, rightmost first, and
the table says which (the JSON has them all).

rich and orjson are imported on first use, not at import time: shell
completion runs the program on every TAB and must not pay for them.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType
    from rich.table import Table
    from rich.text import Text


@functools.cache
def stdout() -> Console:
    """The Console for results."""
    from rich.console import Console

    # highlight=False: rich would colour numbers and paths in plain messages.
    return Console(highlight=False)


@functools.cache
def stderr() -> Console:
    """The Console for notes, warnings and progress."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_json(data: object) -> None:
    """`data` as JSON on stdout: indented on a TTY, one line when piped."""
    import orjson

    option = orjson.OPT_INDENT_2 if sys.stdout.isatty() else 0
    text = orjson.dumps(data, option=option, default=str).decode()
    # Straight to the stream, not through rich: no markup, wrapping or colour
    # may alter machine-readable output.
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def emit(data: object, *, as_json: bool, human: Callable[[], RenderableType | str]) -> None:
    """Print `data` as JSON, or what `human()` renders (built only when needed)."""
    if as_json:
        print_json(data)
    else:
        stdout().print(human())


def is_terminal() -> bool:
    """Whether stdout is a terminal: a person reads it, not a program."""
    return sys.stdout.isatty()


def listing(
    rows: Sequence[object],
    *,
    as_json: bool,
    human: Callable[[], RenderableType | str],
    document: object = None,
    json_is_lines: bool = False,
) -> None:
    """Print a listing by the one rule (module docstring).

    `rows` are the JSON objects, one per line when piped; `document` is what
    `--json` prints (default: `rows` as one JSON array, or as JSON lines when
    `json_is_lines`, as `events tail --json` is documented); `human()` is the
    terminal's view, built only there. Piped and empty, stdout stays
    empty (no JSON lines) and what `human()` says of it goes to stderr.
    """
    if as_json and not json_is_lines:
        print_json(list(rows) if document is None else document)
    elif as_json or not is_terminal():
        json_lines(rows)
        if not rows and not as_json and isinstance(said := human(), str):
            note(said)
    else:
        stdout().print(human())


def json_lines(rows: Iterable[object]) -> None:
    """One JSON object a line on stdout, flushed after each (a follower sees each as it comes)."""
    import orjson

    for row in rows:
        sys.stdout.write(orjson.dumps(row, default=str).decode() + "\n")
        sys.stdout.flush()


def say(message: str) -> None:
    """A one-line human result on stdout, printed literally (no markup, no wrapping)."""
    stdout().print(message, markup=False, soft_wrap=True)


def note(message: str) -> None:
    """A line for the user on stderr (kept out of stdout so --json stays clean)."""
    # soft_wrap: a long line (a log line, a path) stays one line.
    stderr().print(message, markup=False, soft_wrap=True)


def key_value_table(rows: Mapping[str, object], *, title: str | None = None) -> Table:
    """A two-column table: one `field  value` row per item."""
    from rich.table import Table

    result = Table(title=title, show_header=False, box=None, pad_edge=False)
    result.add_column(style="bold")
    result.add_column(overflow="fold")
    for key, value in rows.items():
        result.add_row(_cell(key), _cell(value))
    return result


def table(
    columns: Iterable[str],
    rows: Iterable[Iterable[object]],
    *,
    title: str | None = None,
    ids: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> FittedTable:
    """A table with a header row that fits the terminal it is printed on; None cells print empty.

    `ids`: columns a user copies from, kept on one line when the width
    allows. `optional`: columns left out, in this order, while the table
    cannot fit its words (ids included) on one line each.
    """
    return FittedTable(
        columns=tuple(columns),
        rows=[tuple(_cell(cell) for cell in row) for row in rows],
        title=title,
        ids=frozenset(ids),
        optional=tuple(optional),
    )


@dataclass(slots=True)
class FittedTable:
    """A rich renderable: the widest table that fits `options.max_width`, built when printed."""

    columns: tuple[str, ...]
    rows: list[tuple[Text, ...]]
    title: str | None = None
    ids: frozenset[str] = frozenset()
    optional: tuple[str, ...] = ()
    hidden: list[str] = field(default_factory=list)  # what the last rendering left out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Table]:
        # The width the table needs for each word on one line; measured
        # without a limit, since rich clamps a measurement to the one given.
        unlimited = options.update_width(1_000_000)

        def fits(table: Table) -> bool:
            return console.measure(table, options=unlimited).minimum <= options.max_width

        shown = list(self.columns)
        candidates = [name for name in self.optional if name in shown]
        built = self._build(shown, fits=True)
        while candidates and not fits(built):
            shown.remove(candidates.pop(0))
            built = self._build(shown, fits=True)
        if not fits(built):
            # Not even the ids fit on one line: every column folds, ids too.
            built = self._build(shown, fits=False)
        self.hidden = [name for name in self.columns if name not in shown]
        if self.hidden:
            built.caption = f"not shown at this width: {', '.join(self.hidden)} (--json has all)"
        yield built

    def _build(self, shown: list[str], *, fits: bool) -> Table:
        from rich.table import Table

        result = Table(title=self.title)
        keep = [self.columns.index(name) for name in shown]
        for name in shown:
            # no_wrap on an id column only when it fits: rich then narrows
            # the other columns instead of folding the id.
            result.add_column(name, overflow="fold", no_wrap=fits and name in self.ids)
        for row in self.rows:
            result.add_row(*(row[index] for index in keep))
        return result


def _cell(value: object) -> Text:
    """A table cell as literal text: data such as `[::1]` is not rich markup."""
    from rich.text import Text

    return Text("" if value is None else str(value))


def write_lines(lines: Iterable[str]) -> None:
    """Raw text lines to stdout, untouched (log lines hold [brackets] rich would eat)."""
    for line in lines:
        sys.stdout.write(line if line.endswith("\n") else line + "\n")
    sys.stdout.flush()
