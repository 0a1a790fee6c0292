"""`mirapi sidecar start | stop | status | logs`: run and watch the local sidecar.

    start [--foreground]  spawn the detached daemon (or serve in this process)
    stop                  SIGTERM, a grace period, then SIGKILL; idempotent
    status [--json]       exit 0 when running, 3 when not (LSB)
    logs [-f] [-n N]      the detached sidecar's log file
    list [--json]         every sidecar on this store, from their heartbeats (SPEC §11)
    install-service       a systemd user unit / launchd agent (mirapi_cli/service.py)

Only argument parsing and rendering live here; the process work is in
`mirapi_cli/daemon.py`, serving in `sidecar/process/server.py`. Heavy modules are
imported inside the commands, so `--help` and shell completion stay fast.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mirapi_cli.errors import CliError, ExitCode
from mirapi_cli.options import ConfigOption, DataDirOption, JsonOption, load_settings
from mirapi_cli.service import Manager

if TYPE_CHECKING:
    from rich.console import RenderableType

    from mirapi_cli.daemon import Status
    from sidecar.config import Settings

ListenOption = Annotated[
    str | None,
    typer.Option(metavar="HOST:PORT", help="TCP address to listen on (default 127.0.0.1:8742)."),
]
UnixOption = Annotated[
    Path | None, typer.Option(metavar="PATH", help="Listen on a unix socket instead.")
]
RedisOption = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="Share state through Redis: redis://, rediss://, unix://, redis+cluster://,"
        " redis+sentinel://.",
    ),
]
AllowPrivateOption = Annotated[
    bool,
    typer.Option(
        "--allow-private", help="Allow upstreams on private and loopback addresses (dev)."
    ),
]
AllowHostOption = Annotated[
    list[str] | None,
    typer.Option(metavar="HOST", help="Allow this upstream host despite the egress policy."),
]
ForegroundOption = Annotated[
    bool, typer.Option("--foreground", help="Serve in this process, logging to stderr.")
]
UnlockOption = Annotated[
    bool,
    typer.Option(
        "--unlock",
        help="Keep the secrets' passphrase in memory ($MIRAPI_MASTER_KEY, else asked or read"
        " from stdin), so requests need no X-Proxy-Master-Key.",
    ),
]

app = typer.Typer(
    help="Run and manage the local sidecar daemon.",
    no_args_is_help=True,
)


@app.command()
def start(
    listen: ListenOption = None,
    unix: UnixOption = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    allow_private: AllowPrivateOption = False,
    allow_host: AllowHostOption = None,
    foreground: ForegroundOption = False,
    unlock: UnlockOption = False,
) -> None:
    """Start the sidecar in the background (or in the foreground)."""
    flags: dict[str, object] = {
        "listen": listen,
        "unix": unix,
        "redis": redis,
        # Absent, not false: the config file or environment may turn it on.
        "allow_private": True if allow_private else None,
        "allow_hosts": allow_host,
    }
    settings = load_settings(data_dir, config, flags)
    master_key = _unlock(settings, config, redis) if unlock else None
    if foreground:
        raise typer.Exit(_serve_here(settings, master_key))
    args = _child_args(settings, config, flags)
    _start_detached(settings, args, redis, master_key)


def _unlock(settings: Settings, config: Path | None, redis: str | None) -> str:
    """The passphrase, checked against the stored secrets before anything starts."""
    from mirapi_cli.commands.secrets import unlock_passphrase

    return unlock_passphrase(settings.data_dir, config, redis)


def _serve_here(settings: Settings, master_key: str | None = None) -> int:
    from sidecar.observability.logging import setup_logging
    from sidecar.process import server

    setup_logging(settings.log_level, sys.stderr)
    return server.run(settings, master_key=master_key)


def _child_args(settings: Settings, config: Path | None, flags: dict[str, object]) -> list[str]:
    """The flags to give the detached child: the user's, with paths made absolute."""
    args: list[str] = []
    if config is not None:
        args += ["--config", str(config.expanduser().absolute())]
    if flags["listen"] is not None:
        args += ["--listen", settings.listen]
    if flags["unix"] is not None and settings.unix:
        args += ["--unix", settings.unix]
    if flags["allow_private"]:
        args.append("--allow-private")
    for host in settings.allow_hosts if flags["allow_hosts"] else ():
        args += ["--allow-host", host]
    return args


def _start_detached(
    settings: Settings, args: list[str], redis: str | None, master_key: str | None = None
) -> None:
    from mirapi_cli import daemon, output
    from mirapi_cli.passphrase import MASTER_KEY_ENV, NEW_MASTER_KEY_ENV
    from sidecar import paths

    env = dict(os.environ)
    if redis is not None:
        # Through the environment, not argv: a Redis URL may carry a password,
        # and every user on the machine can read a process's arguments.
        env["MIRAPI_REDIS"] = redis
    # A daemon's environment outlives the command (/proc/PID/environ): the
    # passphrase goes over its stdin instead, and only with --unlock.
    env.pop(MASTER_KEY_ENV, None)
    env.pop(NEW_MASTER_KEY_ENV, None)
    stdin = None
    if master_key is not None:
        args = [*args, "--unlock"]
        stdin = master_key.encode("utf-8") + b"\n"
    try:
        started = daemon.start(args, settings.data_dir, env=env, stdin=stdin)
    except daemon.DaemonError as error:
        for line in error.log_tail:
            output.note(f"  {line}")
        log = f" (log: {paths.log_file(settings.data_dir)})" if error.log_tail else ""
        raise CliError(error.message + log) from None
    _report_stale(started.removed_stale)
    state = started.state
    output.say(f"sidecar started: pid {state.pid}, {state.address}, log {started.log_file}")


@app.command()
def stop(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Stop the sidecar: SIGTERM, then SIGKILL after the grace period."""
    from mirapi_cli import daemon, output

    settings = load_settings(data_dir, config)
    try:
        stopped = daemon.stop(settings.data_dir, grace=settings.shutdown_grace)
    except daemon.DaemonError as error:
        raise CliError(error.message) from None
    _report_stale(stopped.removed_stale)
    if stopped.pid is None:
        output.say("sidecar is not running")
    elif stopped.killed:
        grace = settings.shutdown_grace + daemon.STOP_MARGIN
        output.say(f"sidecar killed: pid {stopped.pid} ignored SIGTERM for {grace:g} s")
    else:
        output.say(f"sidecar stopped: pid {stopped.pid}")


@app.command()
def status(
    data_dir: DataDirOption = None, config: ConfigOption = None, json_output: JsonOption = False
) -> None:
    """Show whether the sidecar runs (exit 0) or not (exit 3)."""
    from mirapi_cli import daemon, output

    settings = load_settings(data_dir, config)
    found = daemon.inspect(settings.data_dir)
    _report_stale(found.removed_stale)
    data = _status_data(found, settings.data_dir)
    output.emit(data, as_json=json_output, human=lambda: _status_table(data))
    if found.state is None:
        raise typer.Exit(ExitCode.NOT_RUNNING)
    if not found.running:
        raise typer.Exit(ExitCode.ERROR)


def _status_data(found: Status, data_dir: Path) -> dict[str, Any]:
    if found.state is None:
        return {"running": False, "data_dir": str(data_dir)}
    # The token only proves identity to `stop`; it is no one's business here.
    state = {key: value for key, value in found.state.as_dict().items() if key != "token"}
    return {
        "running": found.running,
        "responding": found.health is not None,
        **state,
        "data_dir": str(data_dir),
        "health": found.health,
    }


def _status_table(data: dict[str, Any]) -> RenderableType:
    from mirapi_cli import output

    if not data["running"] and "pid" not in data:
        return "sidecar is not running"
    state = "running" if data["running"] else "not responding"
    rows = {"status": state}
    rows |= {key: data[key] for key in ("pid", "address", "version", "started_at", "data_dir")}
    return output.key_value_table(rows)


@app.command()
def logs(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, metavar="N", help="How many last lines.")
    ] = 50,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print the detached sidecar's log (JSON lines)."""
    from mirapi_cli import logtail, output
    from sidecar import paths

    settings = load_settings(data_dir, config)
    path = paths.log_file(settings.data_dir)
    if follow:
        for line in logtail.follow(path, lines):
            output.write_lines([line])
        return
    if not path.exists():
        raise CliError(f"no log yet at {path} (the background sidecar writes it)")
    output.write_lines(logtail.last_lines(path, lines))


@app.command("list")
def list_sidecars(
    as_json: JsonOption = False,
    redis: Annotated[
        str | None,
        typer.Option(metavar="URL", help="The sidecars sharing this Redis (env: MIRAPI_REDIS)."),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List the sidecars on this store (this data dir's, or all on Redis), live or gone."""
    from mirapi_cli import output
    from mirapi_cli.store_access import with_store
    from sidecar.store.fleet import is_gone

    beats = with_store(data_dir, config, redis, lambda store: store.fleet_list())
    now = time.time()
    rows = [
        {"id": b.id, "state": "gone" if is_gone(b, now) else "live"}
        | {key: value for key, value in b.as_dict().items() if key != "id"}
        | {"started_at": _iso(b.started_at), "last_seen": _iso(b.last_seen)}
        for b in beats
    ]

    def human() -> RenderableType | str:
        if not rows:
            return "no sidecar on this store (none has sent a heartbeat in the last hour)"
        return output.table(
            ("ID", "State", "Listen", "Host", "PID", "Version", "Requests", "Jobs", "Last seen"),
            (
                (
                    r["id"],
                    r["state"],
                    r["listen"],
                    r["host"],
                    r["pid"],
                    r["version"],
                    r["requests"],
                    r["jobs_leased"],
                    _ago(now - b.last_seen),
                )
                for r, b in zip(rows, beats, strict=True)
            ),
            ids=("ID", "Listen"),
            optional=("Version", "Jobs", "Requests", "Host", "PID", "Last seen"),
        )

    output.listing(rows, as_json=as_json, human=human)


def _iso(seconds: float) -> str:
    """Unix seconds as ISO 8601 UTC, to the second (as `keys list` shows times)."""
    from mirapi_cli.commands.keys import _iso as iso_seconds

    return iso_seconds(int(seconds))


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


@app.command("install-service")
def install_service(
    listen: ListenOption = None,
    unix: UnixOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    redis_env: Annotated[
        bool,
        typer.Option(
            "--redis-env",
            help="Pass $MIRAPI_REDIS to the service: into a 0600 environment file (systemd)"
            " or the plist, then 0600 (launchd); never into the command line.",
        ),
    ] = False,
    unlock: Annotated[
        bool,
        typer.Option(
            "--unlock",
            help="Run with --unlock: the service reads $MIRAPI_MASTER_KEY from its environment"
            " file (launchd: the plist), where you put it; this command never writes it.",
        ),
    ] = False,
    manager: Annotated[
        Manager | None,
        typer.Option(help="The service manager (default: systemd on Linux, launchd on macOS)."),
    ] = None,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the unit to stdout; write nothing.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing unit.")] = False,
) -> None:
    """Install the sidecar as a user service: restarted on failure, stopped gracefully."""
    from mirapi_cli import output, service
    from sidecar import __version__

    settings = load_settings(data_dir, config, {"listen": listen, "unix": unix})
    try:
        plan = service.plan(
            settings,
            manager or service.default_manager(),
            python=sys.executable,
            home=Path.home(),
            env=os.environ,
            config=config,
            listen_given=listen is not None,
            unix_given=unix is not None,
            redis_env=redis_env,
            unlock=unlock,
            version=__version__,
        )
        if print_only:
            sys.stdout.buffer.write(plan.content)
            sys.stdout.flush()
        else:
            for line in service.describe(plan, replaced=service.install(plan, force=force)):
                output.say(line)
    except service.ServiceError as error:
        raise CliError(str(error)) from None
    for note in service.notes(plan, written=not print_only):
        output.note(note)


def _report_stale(reason: str | None) -> None:
    if reason is not None:
        from mirapi_cli import output

        output.note(f"removed a stale state file: {reason}")
