"""Everything the CLI writes: one rich Console for stdout, one for stderr.

A command builds a result (plain data) and hands it to `emit`, which prints
either JSON (`--json`: only JSON on stdout, so it pipes into jq) or a human
rendering. Colour follows rich's rules: none when the stream is not a TTY,
none when `NO_COLOR` is set (https://no-color.org), forced by `FORCE_COLOR`.

rich and orjson are imported on first use, not at import time: shell
completion runs the program on every TAB and must not pay for them.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
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
    columns: Iterable[str], rows: Iterable[Iterable[object]], *, title: str | None = None
) -> Table:
    """A table with a header row; None cells print empty."""
    from rich.table import Table

    result = Table(*columns, title=title)
    for row in rows:
        result.add_row(*(_cell(cell) for cell in row))
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
