"""mirapi_cli/errors.py: every failure becomes one stderr line and an exit code."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import typer

from mirapi_cli.errors import CliError, ExitCode, guard, reporter


@pytest.fixture(autouse=True)
def no_debug() -> Iterator[None]:
    yield
    reporter.debug = False


def fail_with(error: BaseException) -> Callable[[], object]:
    def command() -> object:
        raise error

    return command


def test_success_is_0_and_a_returned_code_passes_through() -> None:
    assert guard(lambda: None) == ExitCode.OK
    assert guard(lambda: 3) == 3


def test_cli_error_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = guard(fail_with(CliError("no sidecar [here]", ExitCode.NOT_RUNNING)))
    assert code == ExitCode.NOT_RUNNING
    assert capsys.readouterr().err == "mirapi: error: no sidecar [here]\n"


def test_unexpected_error_is_one_line_without_debug(capsys: pytest.CaptureFixture[str]) -> None:
    code = guard(fail_with(ZeroDivisionError("oops")))
    err = capsys.readouterr().err
    assert code == ExitCode.ERROR
    assert err.count("\n") == 1
    assert "ZeroDivisionError: oops" in err and "--debug" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    reporter.debug = True
    assert guard(fail_with(ZeroDivisionError("oops"))) == ExitCode.ERROR
    assert "Traceback" in capsys.readouterr().err


def test_interrupts_and_exits() -> None:
    assert guard(fail_with(KeyboardInterrupt())) == ExitCode.INTERRUPTED
    assert guard(fail_with(typer.Exit(3))) == 3


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert guard(fail_with(typer.BadParameter("nope"))) == ExitCode.USAGE
    assert "nope" in capsys.readouterr().err
