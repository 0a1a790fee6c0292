"""`mirapi`: the command-line tool. Wiring only; each group lives in `commands/`.

Adding a group is one import and one `add_typer` line. Command modules keep
their top-level imports to Typer and this package: shell completion runs the
program on every TAB, so quart, hypercorn, httpx and rich are imported inside
the commands that use them.

`run()` is the console script's entry point: it runs the app in click's
non-standalone mode so that every failure comes back to `errors.guard`,
the one place that prints it and picks the exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, NoReturn

import typer

from mirapi_cli.commands.completion import app as completion_app
from mirapi_cli.commands.curl import curl
from mirapi_cli.commands.curl_argv import CurlCommand
from mirapi_cli.commands.dashboard import dashboard
from mirapi_cli.commands.events import app as events_app
from mirapi_cli.commands.jobs import app as jobs_app
from mirapi_cli.commands.keys import app as keys_app
from mirapi_cli.commands.llm import app as llm_app
from mirapi_cli.commands.replay import replay
from mirapi_cli.commands.routes import app as routes_app
from mirapi_cli.commands.secrets import app as secrets_app
from mirapi_cli.commands.sidecar import app as sidecar_app
from mirapi_cli.commands.stats import stats
from mirapi_cli.commands.webhooks import app as webhooks_app
from mirapi_cli.errors import guard, reporter
from sidecar import __version__

app = typer.Typer(
    name="mirapi",
    help="MirApi: a header-driven reliability proxy for third-party HTTP APIs.",
    no_args_is_help=True,
    # Unexpected errors reach errors.guard, which shows a traceback only
    # with --debug; Typer's own pretty tracebacks would bypass that.
    pretty_exceptions_enable=False,
)
app.add_typer(sidecar_app, name="sidecar")
app.add_typer(routes_app, name="routes")
app.add_typer(secrets_app, name="secrets")
app.add_typer(jobs_app, name="jobs")
app.add_typer(keys_app, name="keys")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(events_app, name="events")
app.add_typer(llm_app, name="llm")
app.add_typer(completion_app, name="completion")
app.command("curl", cls=CurlCommand)(curl)
app.command("replay")(replay)
app.command("stats")(stats)
app.command("dashboard")(dashboard)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mirapi {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of unexpected errors.")
    ] = False,
) -> None:
    """MirApi: retries, failover, smart cache and idempotency for API calls."""
    reporter.debug = debug


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """Run `mirapi` with `argv` (default: sys.argv) and exit with its code."""
    args = list(argv) if argv is not None else None
    sys.exit(guard(lambda: app(args=args, prog_name="mirapi", standalone_mode=False)))


if __name__ == "__main__":
    run()
