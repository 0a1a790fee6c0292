"""`mirapi dashboard` (SPEC §12): the running sidecar's URL, opened or printed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from mirapi_cli.commands.dashboard import dashboard_url
from mirapi_cli.errors import CliError
from tests.support.cli import Cli


async def test_it_prints_the_running_sidecars_url_which_serves_the_page(
    cli: Cli, http: httpx.AsyncClient
) -> None:
    address = str(cli.start()["address"])
    printed = await asyncio.to_thread(cli, "dashboard", "--print")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == address + "/_mirapi/ui\n"
    page = await http.get(printed.stdout.strip())
    assert page.status_code == 200
    assert "MirApi dashboard" in page.text


async def test_without_a_browser_it_prints_the_url(cli: Cli, tmp_path: Path) -> None:
    address = str(cli.start()["address"])
    # A browser command that cannot open anything: webbrowser says so, we print.
    opened = await asyncio.to_thread(cli, "dashboard", BROWSER="/bin/false")
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout == address + "/_mirapi/ui\n"


async def test_with_a_browser_it_opens_the_url(cli: Cli, tmp_path: Path) -> None:
    address = str(cli.start()["address"])
    seen = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {seen}\n')
    browser.chmod(0o755)
    opened = await asyncio.to_thread(cli, "dashboard", BROWSER=str(browser))
    assert opened.returncode == 0, opened.stderr
    assert seen.read_text() == address + "/_mirapi/ui"
    assert opened.stdout == ""
    assert "opened" in opened.stderr


def test_with_no_sidecar_it_says_so(cli: Cli) -> None:
    done = cli("dashboard", "--print")
    assert done.returncode == 3
    assert "no sidecar is running" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_unix_socket_sidecar_has_no_url_a_browser_can_open() -> None:
    assert dashboard_url("http://[::1]:8742") == "http://[::1]:8742/_mirapi/ui"
    with pytest.raises(CliError, match=r"--listen 127\.0\.0\.1:PORT"):
        dashboard_url("unix:/run/mirapi.sock")
