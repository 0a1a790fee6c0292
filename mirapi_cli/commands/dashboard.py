"""`mirapi dashboard`: open the running sidecar's live dashboard in a browser (SPEC §12).

The sidecar is found as `curl --via running` and `replay` find it: from the
data dir's state file (`sidecar.json`), checked to be that live process.
The URL is opened with the standard library's `webbrowser` (which honours
$BROWSER); where none can be opened (a server, an SSH session) or with
`--print`, it is printed instead. A sidecar on a unix socket has no URL a
browser can open: that is said, with the way round it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mirapi_cli.errors import CliError, ExitCode
from mirapi_cli.options import DataDirOption

#: The dashboard's path on the sidecar (sidecar/dashboard/access.py).
UI_PATH = "/_mirapi/ui"


def dashboard(
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the URL instead of opening a browser.")
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Open the running sidecar's live dashboard in a browser (or print its URL)."""
    url = dashboard_url(running_address(data_dir))
    if print_only or not _open(url):
        typer.echo(url)
        return
    from mirapi_cli import output

    output.note(f"mirapi: opened {url}")


def running_address(data_dir: Path | None) -> str:
    """The address the running sidecar of `data_dir` announced; CliError when none runs."""
    from mirapi_cli.commands.curl import via_address

    address = via_address("running", data_dir)
    if address is None:  # None only for no --via at all: "running" is looked up, or refused
        raise CliError("no sidecar is running on this data dir", ExitCode.NOT_RUNNING)
    return address


def dashboard_url(address: str) -> str:
    """The dashboard's URL on the sidecar at `address` ("http://127.0.0.1:8742")."""
    if not address.startswith(("http://", "https://")):
        raise CliError(
            f"the sidecar listens on {address}, which a browser cannot open: start one"
            " with --listen 127.0.0.1:PORT to see its dashboard"
        )
    return address.rstrip("/") + UI_PATH


def _open(url: str) -> bool:
    import webbrowser

    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False
