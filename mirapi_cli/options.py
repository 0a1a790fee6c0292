"""Options every command shares, and loading Settings the way the sidecar does.

Every command finds its sidecar and store through `--data-dir` /
`$MIRAPI_DATA_DIR` and `--config` / `$MIRAPI_CONFIG` (SPEC §9). The
environment is read by `sidecar.config.load` itself, not by Typer, so one
set of precedence rules holds everywhere: flags > environment > file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mirapi_cli.errors import CliError

if TYPE_CHECKING:
    from sidecar.config import Settings

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help="Data dir: store, state file and log (env: MIRAPI_DATA_DIR).",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="Config file, TOML (env: MIRAPI_CONFIG).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print only JSON to stdout, for scripts.")]


def load_settings(
    data_dir: Path | None, config: Path | None, flags: Mapping[str, object] | None = None
) -> Settings:
    """Settings from `--config`/`$MIRAPI_CONFIG`, the environment and `flags`.

    A bad value becomes a one-line error naming the key (exit 1), no traceback.
    """
    from sidecar.config import ConfigError, load

    try:
        return load(config, os.environ, {"data_dir": data_dir, **(flags or {})})
    except ConfigError as error:
        raise CliError(error.message) from None
