"""Tests for sidecar.paths: where things live, and that nothing is created by surprise."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import platformdirs
import pytest

from sidecar import paths


def test_data_dir_from_env(tmp_path: Path) -> None:
    assert paths.data_dir({"MIRAPI_DATA_DIR": str(tmp_path)}) == tmp_path


def test_data_dir_default_is_platformdirs() -> None:
    expected = platformdirs.user_data_path("mirapi", appauthor=False).absolute()
    assert paths.data_dir({}) == expected
    assert paths.data_dir({"MIRAPI_DATA_DIR": ""}) == expected  # empty counts as unset


def test_data_dir_expands_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/ann")
    assert paths.data_dir({"MIRAPI_DATA_DIR": "~/.mirapi"}) == Path("/home/ann/.mirapi")


def test_relative_paths_become_absolute() -> None:
    assert paths.data_dir({"MIRAPI_DATA_DIR": "data"}) == Path.cwd() / "data"


def test_config_file_from_env(tmp_path: Path) -> None:
    named = tmp_path / "mine.toml"
    assert paths.config_file({"MIRAPI_CONFIG": str(named)}) == named


def test_config_file_default() -> None:
    default = paths.config_file({})
    assert default == paths.default_config_file()
    assert default.name == "config.toml"
    assert default.parent == platformdirs.user_config_path("mirapi", appauthor=False).absolute()


def test_files_in_the_data_dir(tmp_path: Path) -> None:
    assert paths.state_file(tmp_path) == tmp_path / "sidecar.json"
    assert paths.log_file(tmp_path) == tmp_path / "sidecar.log"
    assert paths.database_file(tmp_path) == tmp_path / "mirapi.db"


def test_functions_create_nothing(tmp_path: Path) -> None:
    data = paths.data_dir({"MIRAPI_DATA_DIR": str(tmp_path / "data")})
    paths.state_file(data)
    paths.database_file(data)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_ensure_dir_is_private_and_idempotent(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert paths.ensure_dir(target) == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    (target / "keep").write_text("x")
    paths.ensure_dir(target)
    assert (target / "keep").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_ensure_dir_leaves_an_existing_mode(tmp_path: Path) -> None:
    target = tmp_path / "shared"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    paths.ensure_dir(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


@pytest.mark.skipif(sys.platform == "win32", reason="XDG layout")
def test_importing_and_loading_touch_no_disk(tmp_path: Path) -> None:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("XDG_", "MIRAPI_"))
    }
    env["HOME"] = str(tmp_path)
    code = "import sidecar.paths, sidecar.config as c; c.load(None, {}, {})"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=Path.cwd())
    assert list(tmp_path.iterdir()) == []
