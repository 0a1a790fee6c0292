"""Running the sidecar as a service: a systemd user unit (Linux) or a launchd agent (macOS).

`mirapi sidecar install-service` is `plan` (what to write, a pure function
of the settings, the environment and the flags) followed by `install` (the
writing). The renderers are pure too, so the tests check the exact text
without a service manager.

    systemd  ~/.config/systemd/user/mirapi.service     log: the journal
             ~/.config/mirapi/service.env (0600)        optional: MIRAPI_REDIS, MIRAPI_MASTER_KEY
    launchd  ~/Library/LaunchAgents/dev.mirapi.sidecar.plist   log: <data dir>/sidecar.log

Both run `<python> -P -m sidecar ...`, the lean entry of `mirapi sidecar start`
(no Typer or pydantic in a long-running process; `--unlock` hands over to the CLI):

- the interpreter that ran install-service, by absolute path, so the service
  finds the same install (venv, pipx) without a PATH; `-P` keeps the working
  directory off `sys.path`;
- `--data-dir` always (the service manager does not see the shell's
  $MIRAPI_DATA_DIR), `--config` when one was chosen, `--listen` / `--unix`
  when given; every path absolute;
- restarted on failure only: `systemctl --user stop` and `mirapi sidecar
  stop` end it with exit 0, and it stays stopped;
- stopped with SIGTERM, then SIGKILL after shutdown_grace plus the margin
  `mirapi sidecar stop` allows, so in-flight requests finish.

No credential goes into the unit. A Redis URL may hold a password: systemd
reads it from the environment file (0600), which `--redis-env` fills from
$MIRAPI_REDIS; launchd has no such file, so the plist holds it and is
written 0600. The secrets' passphrase is never written by us: `--unlock`
needs $MIRAPI_MASTER_KEY in that file, put there by the user, who accepts
the passphrase on disk (docs/service.md says what that costs).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidecar.config import Settings

UNIT_NAME = "mirapi.service"
LAUNCHD_LABEL = "dev.mirapi.sidecar"
ENV_FILE_NAME = "service.env"
REDIS_ENV = "MIRAPI_REDIS"
MASTER_KEY_ENV = "MIRAPI_MASTER_KEY"
#: Between restarts after a failure; five failures in a minute and systemd gives up
#: (a second sidecar on the same data dir would otherwise be retried for ever).
RESTART_SEC = 5
START_LIMIT = (60, 5)

# A word systemd takes literally without quotes (no quote, backslash, space, `;`).
_SYSTEMD_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_ENV_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


class Manager(StrEnum):
    """The service managers install-service writes for."""

    systemd = "systemd"
    launchd = "launchd"


class ServiceError(ValueError):
    """Something the service cannot be written with; the message never holds a value."""


def default_manager(platform: str = sys.platform) -> Manager:
    """systemd on Linux, launchd on macOS; ServiceError elsewhere."""
    if platform.startswith("linux"):
        return Manager.systemd
    if platform == "darwin":
        return Manager.launchd
    raise ServiceError(
        f"no service manager is known for {platform}: choose one with --manager systemd|launchd"
    )


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What the service runs, whichever manager runs it."""

    command: tuple[str, ...]
    working_dir: Path
    #: Seconds from SIGTERM to SIGKILL.
    stop_timeout: int
    #: systemd: the optional environment file the unit reads.
    env_file: Path
    #: launchd: where stdout and stderr go (`mirapi sidecar logs` reads it).
    log_file: Path
    #: launchd: variables put in the plist (systemd gets them from `env_file`).
    environment: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    """What install-service writes, and what it tells the user."""

    manager: Manager
    path: Path
    content: bytes
    #: 0600 when the file holds a credential (a launchd plist with the Redis URL, or
    #: one the user will add the passphrase to).
    mode: int
    #: systemd: variables to set in the environment file (empty: leave it alone).
    env_updates: Mapping[str, str]
    env_file: Path
    notes: tuple[str, ...] = ()


# --- the command the service runs ---------------------------------------------------------


def sidecar_command(
    python: str,
    *,
    data_dir: Path,
    config: Path | None = None,
    listen: str | None = None,
    unix: str | None = None,
    unlock: bool = False,
) -> tuple[str, ...]:
    """`python -P -m sidecar` (the foreground sidecar, lean entry) with the chosen flags."""
    if not os.path.isabs(python):
        raise ServiceError("the Python interpreter's path is not absolute (sys.executable)")
    # -P (3.11+): the working directory (the data dir) is not put on sys.path,
    # so no file there can stand in for a module.
    args = [python, "-P", "-m", "sidecar"]
    args += ["--data-dir", str(data_dir)]
    if config is not None:
        args += ["--config", str(config)]
    if listen is not None:
        args += ["--listen", listen]
    if unix is not None:
        args += ["--unix", unix]
    if unlock:
        args.append("--unlock")
    return tuple(args)


def stop_timeout(shutdown_grace: float, margin: float) -> int:
    """Whole seconds from SIGTERM to SIGKILL: the grace for in-flight work, then `margin`."""
    return math.ceil(shutdown_grace + margin)


# --- systemd ------------------------------------------------------------------------------


def _refuse_control(text: str, what: str) -> None:
    # A newline would end the directive and start another one of the writer's choosing.
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise ServiceError(f"{what} holds a control character (a newline?); it cannot go in a unit")


def systemd_word(arg: str) -> str:
    """One ExecStart word: specifiers (`%`) and variables (`$`) escaped, quoted if needed."""
    _refuse_control(arg, "an argument")
    text = arg.replace("%", "%%").replace("$", "$$")
    if _SYSTEMD_PLAIN.fullmatch(arg):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_path(path: Path) -> str:
    """A path as the value of WorkingDirectory= or EnvironmentFile= (specifiers escaped)."""
    text = str(path)
    _refuse_control(text, "a path")
    if text != text.strip():
        raise ServiceError("a path starts or ends with a space, which systemd would drop")
    return text.replace("%", "%%")


def render_systemd_unit(spec: ServiceSpec, version: str) -> str:
    """The systemd user unit (mirapi.service) for `spec`."""
    interval, burst = START_LIMIT
    exec_start = " ".join(systemd_word(arg) for arg in spec.command)
    return "\n".join(
        [
            f"# Written by `mirapi sidecar install-service` (mirapi {version}).",
            "# Run it again with --force to change this file; see docs/service.md.",
            "[Unit]",
            "Description=MirApi sidecar (reliability proxy for third-party HTTP APIs)",
            f"StartLimitIntervalSec={interval}",
            f"StartLimitBurst={burst}",
            "",
            "[Service]",
            "Type=simple",
            f"ExecStart={exec_start}",
            # `-`: the data dir may not exist yet; the sidecar creates it (0700).
            f"WorkingDirectory=-{systemd_path(spec.working_dir)}",
            # `-`: optional. MIRAPI_REDIS (--redis-env) and MIRAPI_MASTER_KEY
            # (--unlock) come from here, never from this file.
            f"EnvironmentFile=-{systemd_path(spec.env_file)}",
            "Restart=on-failure",
            f"RestartSec={RESTART_SEC}",
            "KillSignal=SIGTERM",
            f"TimeoutStopSec={spec.stop_timeout}",
            # The store holds client keys and encrypted secrets: nobody else's.
            "UMask=0077",
            "NoNewPrivileges=yes",
            "SyslogIdentifier=mirapi",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


def env_file_text(existing: str, updates: Mapping[str, str]) -> str:
    """`existing` (an environment file) with `updates` set; other lines kept as they were.

    Values are single-quoted, which systemd and sh both take literally; a
    value that holds a quote or a control character is refused (percent-encode
    it in a URL).
    """
    for name, value in updates.items():
        if "'" in value or any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
            raise ServiceError(
                f"${name} holds a quote or a control character; percent-encode it (value not shown)"
            )
    kept: list[str] = []
    for line in existing.splitlines():
        match = _ENV_LINE.match(line)
        if match is None or match.group(1) not in updates:
            kept.append(line)
    kept += [f"{name}='{value}'" for name, value in updates.items()]
    return "\n".join(kept) + "\n"


# --- launchd ------------------------------------------------------------------------------


def render_launchd_plist(spec: ServiceSpec) -> bytes:
    """The launchd agent (dev.mirapi.sidecar.plist) for `spec`."""
    import plistlib

    agent: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(spec.command),
        "WorkingDirectory": str(spec.working_dir),
        "RunAtLoad": True,
        # Restart after a crash, not after a clean stop (exit 0).
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": RESTART_SEC,
        # SIGTERM, then SIGKILL after this many seconds.
        "ExitTimeOut": spec.stop_timeout,
        "Umask": 0o077,
        "StandardOutPath": str(spec.log_file),
        "StandardErrorPath": str(spec.log_file),
    }
    if spec.environment:
        agent["EnvironmentVariables"] = dict(spec.environment)
    return plistlib.dumps(agent, sort_keys=False) + b"\n"


# --- where, and what to do next -------------------------------------------------------------


def unit_path(manager: Manager, home: Path, env: Mapping[str, str]) -> Path:
    """Where the user's service manager looks for the unit."""
    if manager is Manager.launchd:
        return home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    # systemd reads user units from $XDG_CONFIG_HOME/systemd/user (an absolute one only).
    config_home = env.get("XDG_CONFIG_HOME", "")
    base = Path(config_home) if os.path.isabs(config_home) else home / ".config"
    return base / "systemd" / "user" / UNIT_NAME


def next_steps(manager: Manager, path: Path, *, replaced: bool) -> list[str]:
    """The commands that load (or reload) the written unit."""
    if manager is Manager.systemd:
        start = "restart" if replaced else "enable --now"
        return [f"systemctl --user daemon-reload && systemctl --user {start} mirapi"]
    quoted = shlex.quote(str(path))
    load = f"launchctl load -w {quoted}"
    return [f"launchctl unload {quoted}; {load}" if replaced else load]


# --- the plan ------------------------------------------------------------------------------


def plan(
    settings: Settings,
    manager: Manager,
    *,
    python: str,
    home: Path,
    env: Mapping[str, str],
    config: Path | None,
    listen_given: bool,
    unix_given: bool,
    redis_env: bool,
    unlock: bool,
    version: str,
) -> Plan:
    """What to write for `manager`, from the loaded `settings` and the flags given.

    `listen_given` / `unix_given`: whether --listen / --unix were given
    (their validated values are in `settings`). The service reads the
    `config` flag's file, else $MIRAPI_CONFIG's in `env`, else the default
    one (the same place for the service as for the user).
    """
    from mirapi_cli.daemon import STOP_MARGIN
    from sidecar import paths
    from sidecar.config import is_loopback_listen

    redis = env.get(REDIS_ENV, "") if redis_env else ""
    if redis_env and not redis:
        raise ServiceError(f"--redis-env passes ${REDIS_ENV} to the service, but it is not set")
    env_file = paths.default_config_file().parent / ENV_FILE_NAME
    command = sidecar_command(
        python,
        data_dir=settings.data_dir,
        config=paths.expand(config) if config else paths.env_path(env, paths.CONFIG_ENV),
        listen=settings.listen if listen_given else None,
        unix=settings.unix if unix_given else None,
        unlock=unlock,
    )
    secrets = {REDIS_ENV: redis} if redis else {}
    spec = ServiceSpec(
        command=command,
        working_dir=settings.data_dir,
        stop_timeout=stop_timeout(settings.shutdown_grace, STOP_MARGIN),
        env_file=env_file,
        log_file=paths.log_file(settings.data_dir),
        environment=secrets if manager is Manager.launchd else {},
    )
    given = {"listen"} if listen_given else set()
    given |= {"unix"} if unix_given else set()
    notes = _notes(manager, env, env_file, given, redis_env=redis_env, unlock=unlock)
    if not settings.unix and not is_loopback_listen(settings):
        notes.append(
            f"{settings.listen} can be reached from other machines: the sidecar starts only"
            " once a client key exists (`mirapi keys create`)"
        )
    path = unit_path(manager, home, env)
    if manager is Manager.launchd:
        # The plist is the only place launchd takes variables from: it is
        # written 0600 when it holds one.
        content = render_launchd_plist(spec)
        mode = 0o600 if secrets or unlock else 0o644  # --unlock: the passphrase goes in it
        return Plan(manager, path, content, mode, {}, env_file, tuple(notes))
    env_file_text("", secrets)  # refuses a value the file could not hold, before anything
    content = render_systemd_unit(spec, version).encode()
    return Plan(manager, path, content, 0o644, secrets, env_file, tuple(notes))


def _notes(
    manager: Manager,
    env: Mapping[str, str],
    env_file: Path,
    given: set[str],
    *,
    redis_env: bool,
    unlock: bool,
) -> list[str]:
    """What the service will not see that the user may expect it to (names, never values)."""
    notes: list[str] = []
    if not redis_env and env.get(REDIS_ENV):
        notes.append(
            f"${REDIS_ENV} is set here but the service will not see it: add --redis-env to"
            " pass it on, or put `redis` in the config file"
        )
    if unlock:
        where = (
            f"{env_file} (mode 0600)"
            if manager is Manager.systemd
            else "the plist's EnvironmentVariables (the plist is 0600)"
        )
        notes.append(
            f"--unlock: the service reads the passphrase from ${MASTER_KEY_ENV}; put it in"
            f" {where} yourself, as install-service never writes it (see docs/service.md)"
        )
    from sidecar.config import KEYS, env_var

    skipped = {"data_dir", "redis", *given}  # pinned in the unit, or handled above
    unseen = [env_var(key) for key in KEYS if key not in skipped and env.get(env_var(key))]
    if unseen:
        notes.append(
            f"not passed to the service: {', '.join(unseen)} (put these in the config file)"
        )
    return notes


# --- writing ------------------------------------------------------------------------------


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` whole or not at all, created with `mode` (not umask-widened)."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def install(plan: Plan, *, force: bool) -> bool:
    """Write the plan's files; True when an existing unit was replaced.

    Refuses (ServiceError) to replace the unit without `force`. The
    environment file is updated in place, never replaced: it may hold the
    user's MIRAPI_MASTER_KEY.
    """
    from sidecar import paths

    replaced = plan.path.exists()
    if replaced and not force:
        raise ServiceError(f"{plan.path} exists: add --force to replace it")
    try:
        if plan.env_updates:
            try:
                existing = plan.env_file.read_text(encoding="utf-8")
            except FileNotFoundError:
                existing = ""
            text = env_file_text(existing, plan.env_updates)
            paths.ensure_dir(plan.env_file.parent)
            write_file(plan.env_file, text.encode("utf-8"), 0o600)
        write_file(plan.path, plan.content, plan.mode)
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        where = getattr(error, "filename", None) or plan.path
        raise ServiceError(f"cannot write the service: {where}: {reason}") from None
    return replaced


def describe(plan: Plan, *, replaced: bool) -> list[str]:
    """What install-service says after writing: the files, then the command to run next."""
    lines = [f"wrote {plan.path}"]
    if plan.env_updates:
        lines.append(f"wrote {', '.join(plan.env_updates)} to {plan.env_file} (mode 0600)")
    lines += [f"next: {step}" for step in next_steps(plan.manager, plan.path, replaced=replaced)]
    return lines


def notes(plan: Plan, *, written: bool) -> list[str]:
    """The plan's warnings for stderr, and what `--print` left unwritten."""
    unwritten = (
        []
        if written or not plan.env_updates
        else [
            f"--print wrote nothing: {', '.join(plan.env_updates)} belongs in {plan.env_file}"
            " (mode 0600)"
        ]
    )
    return [*unwritten, *plan.notes]
