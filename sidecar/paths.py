"""Every filesystem location MirApi uses, in one place.

    config file   $MIRAPI_CONFIG   else <platformdirs user config dir>/config.toml
    data dir      $MIRAPI_DATA_DIR else <platformdirs user data dir>
      sidecar.json   the running sidecar's pid, address and version
      sidecar.log    the detached sidecar's log
      mirapi.db      the embedded store (SQLite, WAL)

Functions here only compute paths: nothing touches the disk at import time,
and only `ensure_dir` creates anything. The environment is a parameter so
callers (and tests) can pass their own mapping instead of `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

APP_NAME = "mirapi"
CONFIG_FILE_NAME = "config.toml"

DATA_DIR_ENV = "MIRAPI_DATA_DIR"
CONFIG_ENV = "MIRAPI_CONFIG"


def expand(path: str | os.PathLike[str]) -> Path:
    """`path` with `~` expanded and made absolute.

    Absolute because the sidecar detaches and may run from another working
    directory than the command that started it; both must see one place.
    """
    return Path(path).expanduser().absolute()


def env_path(env: Mapping[str, str], name: str) -> Path | None:
    """The path in `env[name]`, or None when unset or empty.

    An empty variable counts as unset: `MIRAPI_DATA_DIR=` in a compose file or
    a `.env` usually means "not configured", never "the current directory".
    """
    value = env.get(name, "")
    return expand(value) if value else None


def data_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where the store, state file and log live: `$MIRAPI_DATA_DIR` or the platformdirs one."""
    # appauthor=False: on Windows platformdirs would otherwise nest
    # mirapi\mirapi (author, then app).
    return env_path(env, DATA_DIR_ENV) or expand(
        platformdirs.user_data_path(APP_NAME, appauthor=False)
    )


def default_config_file() -> Path:
    """`config.toml` in the platformdirs user config dir (it may not exist)."""
    return expand(platformdirs.user_config_path(APP_NAME, appauthor=False) / CONFIG_FILE_NAME)


def config_file(env: Mapping[str, str] = os.environ) -> Path:
    """The config file to read: `$MIRAPI_CONFIG` or the platformdirs default."""
    return env_path(env, CONFIG_ENV) or default_config_file()


def state_file(data_dir: Path) -> Path:
    """`sidecar.json`: the running sidecar's pid, listen address and version."""
    return data_dir / "sidecar.json"


def log_file(data_dir: Path) -> Path:
    """`sidecar.log`: where a detached sidecar writes its log lines."""
    return data_dir / "sidecar.log"


def database_file(data_dir: Path) -> Path:
    """`mirapi.db`: the embedded store's SQLite file."""
    return data_dir / "mirapi.db"


def ensure_dir(path: Path) -> Path:
    """Create `path` (and its parents) if missing; return it.

    A new directory is 0o700: it holds the store (API keys, encrypted
    secrets, recorded requests) and the pid file, which are nobody else's
    business. An existing directory keeps its mode: the user chose it, and
    may share it on purpose.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
