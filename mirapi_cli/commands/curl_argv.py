"""Reading curl's command line where click alone falls short.

curl joins `-d`, `--data-raw`, `--data-binary`, `--data-urlencode` and
`--json` pieces in the order they were typed, whichever flag carried them;
click hands each option's values over as a separate list. The command keeps
its raw arguments (`CurlCommand`), and `ordered_values` reads them again
with the command's own option table, so bundles (`-sSd x`), attached
values (`-dx`, `--data=x`) and `--` are read as click read them.

A mistyped option gets one suggestion, the closest by spelling, rather than
click's list (which offered `--data-dir` for `--data-urlencode`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

# typer 0.29 (pinned) runs on its own copy of click: its classes are these.
from typer._click.core import Command, Context
from typer._click.exceptions import NoSuchOption
from typer.core import TyperCommand, TyperOption

#: Where `CurlCommand` keeps the arguments it was given, in `ctx.meta`.
ARGV_KEY = "mirapi.curl.argv"


class CurlCommand(TyperCommand):
    """`mirapi curl`: keeps its raw arguments and suggests the closest option."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV_KEY] = list(args)
        try:
            return super().parse_args(ctx, args)
        except NoSuchOption as error:
            hint = closest(error.option_name, option_names(self))
            raise NoSuchOption(error.option_name, possibilities=hint, ctx=ctx) from None


def option_names(command: Command) -> list[str]:
    """Every spelling of every option `command` takes."""
    return [
        name
        for param in command.params
        if isinstance(param, TyperOption)
        for name in (*param.opts, *param.secondary_opts)
    ]


def closest(typed: str, names: Sequence[str]) -> list[str]:
    """The one option most like `typed` (several only on an exact tie); none if nothing is close."""
    scores = {name: difflib.SequenceMatcher(None, typed, name).ratio() for name in names}
    best = max(scores.values(), default=0.0)
    if best < 0.6:
        return []
    return [name for name, score in scores.items() if score == best]


def ordered_values(
    command: Command, args: Sequence[str], wanted: set[str]
) -> list[tuple[str, str]]:
    """(parameter name, value) for each use of an option named in `wanted`, in typed order."""
    options = {
        name: param
        for param in command.params
        if isinstance(param, TyperOption)
        for name in (*param.opts, *param.secondary_opts)
    }
    found: list[tuple[str, str]] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            break
        if arg.startswith("--"):
            name, equals, value = arg.partition("=")
            option = options.get(name)
            if option is None or option.is_flag:
                continue
            if not equals and index < len(args):
                value, index = args[index], index + 1
            if option.name in wanted:
                found.append((option.name, value))
        elif arg.startswith("-") and len(arg) > 1:
            # A bundle of short flags, the last of which may take a value.
            for position in range(1, len(arg)):
                option = options.get("-" + arg[position])
                if option is None:
                    break
                if option.is_flag or option.count:
                    continue
                value = arg[position + 1 :]
                if not value and index < len(args):
                    value, index = args[index], index + 1
                if option.name in wanted:
                    found.append((option.name, value))
                break
    return found


def typed_in_order(
    context: Context, wanted: set[str], fallback: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """`ordered_values` for the running command; `fallback` when not run by CurlCommand."""
    if ARGV_KEY not in context.meta:
        return fallback
    return ordered_values(context.command, context.meta[ARGV_KEY], wanted)
