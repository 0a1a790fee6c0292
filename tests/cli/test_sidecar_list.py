"""`mirapi sidecar list` (SPEC §11) by the listing rule (mirapi_cli/output.py):
a terminal gets a table that never cuts an id, a pipe gets JSON lines,
`--json` one JSON array; the real CLI and a real sidecar on a data dir.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import Cli, kill_leftover, on_terminal


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    config = tmp_path / "config.toml"
    config.write_text("")
    made = Cli(tmp_path / "data", config)
    made.env.pop("MIRAPI_REDIS", None)
    yield made
    if made.state_file.exists():
        made("sidecar", "stop")
        kill_leftover(made.state_file)


def test_no_sidecar_lists_nothing_and_says_so(cli: Cli) -> None:
    piped = cli("sidecar", "list")
    assert piped.returncode == 0 and piped.stdout == ""
    assert "no sidecar" in piped.stderr

    as_json = cli("sidecar", "list", "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == []


def test_the_running_sidecar_is_listed_piped_as_json_and_whole_on_a_narrow_terminal(
    cli: Cli,
) -> None:
    state = cli.start()

    piped = cli("sidecar", "list")
    assert piped.returncode == 0, piped.stderr
    (line,) = piped.stdout.splitlines()
    row = json.loads(line)
    assert row["state"] == "live" and row["pid"] == state["pid"]
    assert row["listen"] == state["address"]
    assert json.loads(cli("sidecar", "list", "--json").stdout) == [row]

    code, seen, err = on_terminal(["sidecar", "list"], cli.env, columns=50)
    assert code == 0, err
    # The id and the address, each on one line, though the terminal is narrow.
    assert row["id"] in seen and row["listen"] in seen
    assert "live" in seen

    cli("sidecar", "stop")
    # A clean stop takes the sidecar off the list.
    assert json.loads(cli("sidecar", "list", "--json").stdout) == []
