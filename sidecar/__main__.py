"""`python -m sidecar`: serve in this process, the lean entry of the detached sidecar.

`mirapi sidecar start` (detached) runs this instead of the CLI's own
`sidecar start --foreground`: the same flags and settings, but without
Typer, Click's help machinery and the pydantic that Typer's adapters load,
which a long-running sidecar would otherwise carry for nothing (about 7 MB
resident; issue 20, bench/README.md Memory). `--unlock` needs the CLI's
passphrase prompt and store access, so it is handed to the CLI whole.

A config problem is one line on stderr and exit 1, as the CLI reports it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sidecar", add_help=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--listen")
    parser.add_argument("--unix")
    parser.add_argument("--redis")
    parser.add_argument("--allow-private", action="store_true")
    parser.add_argument("--allow-host", action="append", default=[])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until a signal; the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--unlock" in args:
        from mirapi_cli.main import run

        run(["sidecar", "start", "--foreground", *args])  # exits
    from sidecar.config import ConfigError, load
    from sidecar.observability.logging import setup_logging
    from sidecar.process import server

    parsed = _parser().parse_args(args)
    flags: dict[str, object] = {
        "data_dir": parsed.data_dir,
        "listen": parsed.listen,
        "unix": parsed.unix,
        "redis": parsed.redis,
        # Absent, not false: the config file or environment may turn it on.
        "allow_private": True if parsed.allow_private else None,
        "allow_hosts": parsed.allow_host,
    }
    try:
        settings = load(parsed.config, os.environ, flags)
    except ConfigError as error:
        print(f"mirapi: error: {error.message}", file=sys.stderr)
        return 1
    setup_logging(settings.log_level, sys.stderr)
    return server.run(settings)


if __name__ == "__main__":
    raise SystemExit(main())
