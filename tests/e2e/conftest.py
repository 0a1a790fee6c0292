"""Fixtures for the end-to-end tests: real processes, loopback only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cli import Cli, kill_leftover


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client for talking to sidecar processes."""
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """The CLI on a fresh data dir and empty config; its sidecar, if started, is stopped.

    No MIRAPI_MASTER_KEY from the outside: a test that needs one passes it.
    """
    config = tmp_path / "config.toml"
    config.write_text("")
    made = Cli(tmp_path / "data", config)
    made.env.pop("MIRAPI_MASTER_KEY", None)
    yield made
    if made.state_file.exists():
        made("sidecar", "stop")
        kill_leftover(made.state_file)
