"""Exit codes and the one place where the CLI turns failures into them.

    0    OK            the command did what was asked
    1    ERROR         it could not (one line on stderr says why)
    2    USAGE         bad arguments (click prints the usage and the problem)
    3    NOT_RUNNING   `sidecar status`: no sidecar runs (LSB, as supervisorctl)
    130  INTERRUPTED   Ctrl-C (128 + SIGINT, what shells report)

Commands raise `CliError` for failures they expect (a bad config value, a
sidecar that will not start); `guard` catches everything, prints one line to
stderr and returns the exit code. A traceback is printed only with `--debug`,
so a user never sees one for a mistake they can fix.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from enum import IntEnum

import typer


class ExitCode(IntEnum):
    """The process exit status of `mirapi`."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_RUNNING = 3
    INTERRUPTED = 130


class CliError(Exception):
    """An expected failure: its message is shown as is, without a traceback."""

    def __init__(self, message: str, code: int = ExitCode.ERROR) -> None:
        # An int, not only ExitCode: a command may have codes of its own
        # (`mirapi curl` follows curl's).
        super().__init__(message)
        self.message = message
        self.code = code


class Reporter:
    """How failures are shown; the root callback turns `debug` on for `--debug`."""

    debug: bool = False

    def fail(self, message: str) -> None:
        """Print one `mirapi: error: ...` line to stderr."""
        # typer.echo rather than rich: a message may hold [brackets] that rich
        # would take for markup, and this path must not fail itself.
        typer.echo(f"mirapi: error: {message}", err=True)

    def crash(self, error: BaseException) -> None:
        """An unexpected exception: one line, or the traceback with --debug."""
        if self.debug:
            traceback.print_exception(error, file=sys.stderr)
            return
        self.fail(f"{type(error).__name__}: {error} (run with --debug for the traceback)")


reporter = Reporter()


def _click_class(name: str) -> type[Exception]:
    """A click exception class, from the copy of click this Typer uses.

    Typer up to 0.28 raises click's own exceptions, 0.29 a vendored copy of
    click; both are reachable through `typer.BadParameter`'s bases.
    """
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name and issubclass(cls, Exception):
            return cls
    raise LookupError(name)


_ClickException = _click_class("ClickException")


def guard(command: Callable[[], object]) -> int:
    """Run `command` (a click main in non-standalone mode); return the exit code."""
    try:
        result = command()
    except CliError as error:
        reporter.fail(error.message)
        return error.code
    except _ClickException as error:
        # Usage errors print the usage line and the problem (exit 2).
        error.show()  # type: ignore[attr-defined]
        return int(error.exit_code)  # type: ignore[attr-defined]
    except typer.Exit as error:
        return error.exit_code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except typer.Abort as error:
        return _aborted(error)
    except BrokenPipeError:
        return _broken_pipe()
    except Exception as error:
        reporter.crash(error)
        return ExitCode.ERROR
    # Non-standalone click returns the command's value: None, or a code from
    # `ctx.exit(n)` / `typer.Exit(n)`.
    return result if isinstance(result, int) else ExitCode.OK


def _aborted(error: BaseException) -> int:
    """Click turns Ctrl-C into Abort (130); a prompt that met EOF is an error."""
    if isinstance(error.__cause__, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    reporter.fail("aborted")
    return ExitCode.ERROR


def _broken_pipe() -> int:
    """`mirapi ... | head` closed our stdout: stop quietly, as `cat` would."""
    import os

    # Point stdout at /dev/null so the interpreter's final flush does not
    # raise the same error again while exiting.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return ExitCode.ERROR
