"""The generated files and the completion scripts, checked against the real CLI.

- completions/, man/ and docs/commands.md are what `scripts/generate_docs.py`
  produces now (regenerated in memory), and name every option of every command.
- Every man page renders without a warning (groff, else man; skipped if neither).
- The committed completion scripts load in real bash, zsh and fish: an
  interactive shell on a pseudo-terminal is typed `mirapi ro<TAB>` and must
  show `mirapi routes `, and so on; fish is asked with `complete -C`. The
  scripts call back into the real `mirapi` (a wrapper on PATH running this
  checkout). A missing shell skips its tests, with the reason.
- `mirapi completion show` and `install` through the real entry point, into
  a temporary HOME.
"""

from __future__ import annotations

import importlib.util
import os
import pty
import select
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import typer

from mirapi_cli.commands import completion
from mirapi_cli.errors import CliError
from mirapi_cli.main import app
from tests.support.cli import REPO, Cli

WAIT = 30.0
SHELLS = ("bash", "zsh", "fish")

# (typed before the TAB, the line the shell must then show)
COMPLETES = [
    pytest.param("mirapi ro", "mirapi routes", id="subcommand"),
    pytest.param("mirapi routes add --strat", "mirapi routes add --strategy", id="option"),
    pytest.param("mirapi completion show z", "mirapi completion show zsh", id="choice"),
]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_docs", REPO / "scripts" / "generate_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: its dataclasses look their module up.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generator = _load_generator()


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    files: dict[str, str] = generator.generate()
    return files


# --- staleness and completeness ---


def test_committed_files_are_what_the_generator_makes_now(generated: dict[str, str]) -> None:
    stale = generator.stale(generated)
    assert not stale, f"stale: {stale}; run: python scripts/generate_docs.py"


def test_stale_finds_a_changed_file_and_an_orphan_page(
    generated: dict[str, str], tmp_path: Path
) -> None:
    assert sorted(generator.write(generated, tmp_path)) == sorted(generated)
    assert generator.stale(generated, tmp_path) == []
    (tmp_path / "man" / "mirapi-routes.1").write_text("old\n")
    (tmp_path / "man" / "mirapi-gone.1").write_text("a command that was removed\n")
    (tmp_path / "completions" / "_mirapi").unlink()

    stale = generator.stale(generated, tmp_path)

    assert sorted(stale) == ["completions/_mirapi", "man/mirapi-gone.1", "man/mirapi-routes.1"]
    generator.write(generated, tmp_path)
    assert generator.stale(generated, tmp_path) == []
    assert not (tmp_path / "man" / "mirapi-gone.1").exists()


def test_generating_twice_gives_the_same_files(generated: dict[str, str]) -> None:
    assert generator.generate() == generated


def _click_tree() -> dict[tuple[str, ...], list[str]]:
    """Every command path -> its option strings, read from Click directly."""
    root = typer.main.get_command(app)
    out: dict[tuple[str, ...], list[str]] = {}

    def visit(command: typer.core.TyperGroup, path: tuple[str, ...]) -> None:
        out[path] = [
            opt
            for param in command.params
            if param.param_type_name == "option" and not param.hidden
            for opt in (*param.opts, *param.secondary_opts)
        ]
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                visit(sub, (*path, name))

    visit(root, ("mirapi",))
    return out


def test_every_option_of_every_command_is_in_its_man_page_and_the_reference(
    generated: dict[str, str],
) -> None:
    tree = _click_tree()
    assert ("mirapi", "routes", "add") in tree and "--endpoint" in tree[("mirapi", "routes", "add")]
    reference = generated["docs/commands.md"]
    for path, options in tree.items():
        page = generated[f"man/{'-'.join(path[:2])}.1"]
        assert f"`{' '.join(path)}`" in reference, path
        # A nested group (`mirapi llm budget`) has no options of its own.
        if len(path) > 2 and options not in ([], ["--help"]):
            heading = " ".join(path).replace("-", "\\-")
            assert f'.SS "{heading}"' in page, path
        for option in options:
            assert "\\fB" + option.replace("-", "\\-") + "\\fR" in page, (path, option)
            assert option in reference, (path, option)


def test_each_top_level_command_has_a_page_with_every_section(
    generated: dict[str, str],
) -> None:
    root = typer.main.get_command(app)
    names = ["mirapi", *(f"mirapi-{name}" for name in getattr(root, "commands", {}))]
    pages = sorted(name for name in generated if name.startswith("man/"))
    assert pages == sorted(f"man/{name}.1" for name in names)
    for name in names:
        page = generated[f"man/{name}.1"]
        for section in (
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
            "SEE ALSO",
        ):
            assert f"\n.SH {section}\n" in page, (name, section)
        for variable in ("MIRAPI_DATA_DIR", "MIRAPI_CONFIG", "MIRAPI_REDIS", "NO_COLOR"):
            assert f"\\fB{variable.replace('-', chr(92) + '-')}\\fR" in page, (name, variable)


def test_completion_files_are_the_scripts_the_package_shows(generated: dict[str, str]) -> None:
    for shell in completion.Shell:
        name = f"completions/{completion.FILE_NAMES[shell]}"
        assert generated[name] == completion.script(shell)
    # zsh's compinit reads the first line only: no blank line before it.
    assert generated["completions/_mirapi"].startswith("#compdef mirapi\n")


def test_the_wheel_installs_completions_and_man_pages_where_they_are_looked_for() -> None:
    with (REPO / "pyproject.toml").open("rb") as handle:
        wheel = tomllib.load(handle)["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["shared-data"] == {
        "completions/mirapi.bash": "share/bash-completion/completions/mirapi",
        "completions/_mirapi": "share/zsh/site-functions/_mirapi",
        "completions/mirapi.fish": "share/fish/vendor_completions.d/mirapi.fish",
        "man": "share/man/man1",
    }
    for source in wheel["shared-data"]:
        assert (REPO / source).exists(), source


# --- man pages render ---


@pytest.mark.parametrize("page", sorted((REPO / "man").glob("*.1")), ids=lambda p: p.name)
def test_man_page_renders_without_warnings(page: Path) -> None:
    if shutil.which("groff"):
        command = ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)]
    elif shutil.which("man"):
        command = ["man", "--warnings", "-l", str(page)]
    else:
        pytest.skip("neither groff nor man is installed (apt-get install groff man-db)")
    env = {**os.environ, "MANPAGER": "cat", "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


# --- completion in real shells ---


def _need(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed (apt-get install {shell})")
    return path


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """A clean HOME and a `mirapi` on PATH that runs this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "mirapi"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mirapi_cli.main "$@"\n')
    wrapper.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(REPO),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "TERM": "xterm",
        "LANG": "C.UTF-8",
        # A data dir of its own: completing must not touch the user's.
        "MIRAPI_DATA_DIR": str(tmp_path / "data"),
        "MIRAPI_CONFIG": str(tmp_path / "none.toml"),
    }


def _line_after_typing(
    argv: list[str], setup: list[str], typed: str, env: dict[str, str], dump: Path
) -> str:
    """Run an interactive shell on a pty, type `typed` then Ctrl-X; return its line.

    `setup` binds Ctrl-X to write the line being edited to `dump`, so what
    TAB left there is read back without scraping the terminal.
    """
    master, slave = pty.openpty()
    process = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=dump.parent,
        start_new_session=True,
    )
    os.close(slave)
    transcript = bytearray()
    try:
        os.write(master, "".join(line + "\n" for line in setup).encode())
        os.write(master, typed.encode() + b"\x18")
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if dump.exists() and (text := dump.read_text()).endswith("\n"):
                return text[:-1]
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    transcript += os.read(master, 65536)
                except OSError:
                    break  # the shell exited
        shown = transcript.decode(errors="replace")[-3000:]
        raise AssertionError(f"{argv[0]} never showed its line; the terminal had:\n{shown}")
    finally:
        process.kill()
        process.wait()
        os.close(master)


def _bash_line(env: dict[str, str], tmp_path: Path, source: Path, typed: str) -> str:
    bash = _need("bash")
    dump = tmp_path / "line.txt"
    setup = [
        f"source '{source}'",
        f"dump() {{ printf '%s\\n' \"$READLINE_LINE\" > '{dump}'; READLINE_LINE=; }}",
        "bind -x '\"\\C-x\": dump'",
    ]
    return _line_after_typing([bash, "--norc", "--noprofile", "-i"], setup, typed, env, dump)


def _zsh_line(env: dict[str, str], tmp_path: Path, load: str, typed: str) -> str:
    zsh = _need("zsh")
    dump = tmp_path / "line.txt"
    setup = [
        load,
        f"dump() {{ print -r -- \"$BUFFER\" > '{dump}'; BUFFER=; }}",
        "zle -N dump; bindkey '^X' dump",
    ]
    return _line_after_typing([zsh, "-f", "-i"], setup, typed, env, dump)


def _fish_candidates(env: dict[str, str], typed: str, source: Path | None) -> list[str]:
    fish = _need("fish")
    load = f"source '{source}'; " if source is not None else ""
    done = subprocess.run(
        [fish, "-c", f"{load}complete -C '{typed}'"],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    return [line.split("\t")[0] for line in done.stdout.splitlines()]


@pytest.mark.parametrize(("typed", "expected"), COMPLETES)
def test_bash_completes(
    shell_env: dict[str, str], tmp_path: Path, typed: str, expected: str
) -> None:
    line = _bash_line(shell_env, tmp_path, REPO / "completions" / "mirapi.bash", typed + "\t")
    assert line == expected + " "


@pytest.mark.parametrize(("typed", "expected"), COMPLETES)
def test_zsh_completes_from_fpath(
    shell_env: dict[str, str], tmp_path: Path, typed: str, expected: str
) -> None:
    # completions/ holds `_mirapi`: the directory itself can go in fpath.
    load = f"fpath=('{REPO / 'completions'}' $fpath); autoload -Uz compinit; compinit -u -D"
    assert _zsh_line(shell_env, tmp_path, load, typed + "\t") == expected + " "


def test_zsh_completes_when_sourced_after_compinit(
    shell_env: dict[str, str], tmp_path: Path
) -> None:
    script = REPO / "completions" / "_mirapi"
    load = f"autoload -Uz compinit; compinit -u -D; source '{script}'"
    assert _zsh_line(shell_env, tmp_path, load, "mirapi ro\t") == "mirapi routes "


@pytest.mark.parametrize(("typed", "expected"), COMPLETES)
def test_fish_completes(shell_env: dict[str, str], typed: str, expected: str) -> None:
    candidates = _fish_candidates(shell_env, typed, REPO / "completions" / "mirapi.fish")
    assert candidates == [expected.rsplit(" ", 1)[1]]


def test_fish_falls_back_to_file_names(shell_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "routes.toml").write_text("")
    typed = f"mirapi routes import {tmp_path}/rout"
    candidates = _fish_candidates(shell_env, typed, REPO / "completions" / "mirapi.fish")
    assert candidates == [f"{tmp_path}/routes.toml"]


# --- mirapi completion show | install ---


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    config = tmp_path / "config.toml"
    config.write_text("")
    return Cli(tmp_path / "data", config)


@pytest.mark.parametrize("shell", SHELLS)
def test_show_prints_the_committed_script(cli: Cli, shell: str) -> None:
    done = cli("completion", "show", shell)
    assert done.returncode == 0, done.stderr
    name = completion.FILE_NAMES[completion.Shell(shell)]
    assert done.stdout == (REPO / "completions" / name).read_text()


def test_show_refuses_an_unknown_shell(cli: Cli) -> None:
    done = cli("completion", "show", "tcsh")
    assert done.returncode == 2
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def _install(cli: Cli, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    defaults = {"HOME": str(home), "XDG_DATA_HOME": "", "XDG_CONFIG_HOME": "", "SHELL": ""}
    return cli("completion", "install", *args, **{**defaults, **env})


@pytest.mark.parametrize(
    ("shell", "where"),
    [
        ("bash", ".local/share/bash-completion/completions/mirapi"),
        ("zsh", ".zfunc/_mirapi"),
        ("fish", ".config/fish/completions/mirapi.fish"),
    ],
)
def test_install_writes_the_script_where_the_shell_looks(
    cli: Cli, tmp_path: Path, shell: str, where: str
) -> None:
    home = tmp_path / "home"
    done = _install(cli, home, shell)
    assert done.returncode == 0, done.stderr
    path = home / where
    assert path.read_text() == completion.script(completion.Shell(shell))
    assert str(path) in done.stdout
    if shell == "zsh":
        assert f"fpath=({home / '.zfunc'} $fpath)" in done.stderr


def test_install_follows_xdg_dirs(cli: Cli, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert _install(cli, home, "bash", XDG_DATA_HOME=str(tmp_path / "data-home")).returncode == 0
    assert _install(cli, home, "fish", XDG_CONFIG_HOME=str(tmp_path / "conf")).returncode == 0
    assert (tmp_path / "data-home/bash-completion/completions/mirapi").is_file()
    assert (tmp_path / "conf/fish/completions/mirapi.fish").is_file()
    assert not (home / ".local").exists() and not (home / ".config").exists()


def test_install_picks_the_shell_from_SHELL(cli: Cli, tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = _install(cli, home, SHELL="/usr/bin/fish")
    assert done.returncode == 0, done.stderr
    assert (home / ".config/fish/completions/mirapi.fish").is_file()


@pytest.mark.parametrize("value", ["/bin/tcsh", ""])
def test_install_without_a_known_shell_says_to_name_one(
    cli: Cli, tmp_path: Path, value: str
) -> None:
    home = tmp_path / "home"
    done = _install(cli, home, SHELL=value)
    assert done.returncode == 1
    assert "mirapi completion install bash|zsh|fish" in done.stderr
    assert "Traceback" not in done.stderr
    assert not home.exists() or not any(home.rglob("*mirapi*"))


def test_install_reports_a_directory_it_cannot_write(cli: Cli, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".zfunc").write_text("a file where the directory should be")
    done = _install(cli, home, "zsh")
    assert done.returncode == 1
    assert f"cannot write {home / '.zfunc' / '_mirapi'}" in done.stderr
    assert "Traceback" not in done.stderr


def test_installed_scripts_load_where_they_were_put(
    cli: Cli, shell_env: dict[str, str], tmp_path: Path
) -> None:
    """zsh from ~/.zfunc in fpath; fish autoloads its file (no `source`)."""
    available = [shell for shell in ("zsh", "fish") if shutil.which(shell)]
    if not available:
        pytest.skip("neither zsh nor fish is installed (apt-get install zsh fish)")
    home = Path(shell_env["HOME"])
    for shell in available:
        done = _install(cli, home, shell, XDG_CONFIG_HOME=shell_env["XDG_CONFIG_HOME"])
        assert done.returncode == 0, done.stderr
    if "zsh" in available:
        load = "fpath=(~/.zfunc $fpath); autoload -Uz compinit; compinit -u -D"
        assert _zsh_line(shell_env, tmp_path, load, "mirapi ro\t") == "mirapi routes "
    if "fish" in available:
        assert _fish_candidates(shell_env, "mirapi ro", None) == ["routes"]


# --- the pure parts ---


def test_detect_shell_reads_the_name_in_SHELL() -> None:
    assert completion.detect_shell({"SHELL": "/usr/local/bin/zsh"}) is completion.Shell.zsh
    with pytest.raises(CliError, match="SHELL is not set"):
        completion.detect_shell({})


def test_install_path_ignores_a_relative_xdg_dir(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": "relative/dir", "XDG_CONFIG_HOME": "also/relative"}
    bash = completion.install_path(completion.Shell.bash, env, tmp_path)
    fish = completion.install_path(completion.Shell.fish, env, tmp_path)
    assert bash == tmp_path / ".local/share/bash-completion/completions/mirapi"
    assert fish == tmp_path / ".config/fish/completions/mirapi.fish"
