"""`mirapi sidecar install-service`: the systemd user unit and the launchd agent.

The renderers are checked as text (configparser for the unit, plistlib for
the plist). The command runs the real entry point with HOME in the test's
tmp dir, so nothing lands in the real ~/.config or ~/Library. Where
`systemd-analyze` can run, `verify --user` must accept the written unit
without a word about it; the command the units hold is run for real and
must serve, then stop with exit 0 on SIGTERM.
"""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirapi_cli import service
from mirapi_cli.daemon import STOP_MARGIN
from mirapi_cli.service import Manager, ServiceError, ServiceSpec
from sidecar.config import Settings, load
from tests.support.cli import REPO, WAIT, Cli, kill_leftover

PASSWORD = "s3cret-redis-pw"
REDIS_URL = f"redis://:{PASSWORD}@127.0.0.1:6379/0"


def spec(tmp_path: Path, **overrides: object) -> ServiceSpec:
    values: dict[str, object] = {
        "command": service.sidecar_command(sys.executable, data_dir=tmp_path / "data"),
        "working_dir": tmp_path / "data",
        "stop_timeout": 15,
        "env_file": tmp_path / "config" / "service.env",
        "log_file": tmp_path / "data" / "sidecar.log",
    }
    return ServiceSpec(**(values | overrides))  # type: ignore[arg-type]


def unit_sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are CamelCase
    parser.read_string(text)
    return parser


def settings(tmp_path: Path, **flags: object) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text("")
    return load(config, {}, {"data_dir": tmp_path / "data", **flags})


def make_plan(tmp_path: Path, manager: Manager, **overrides: object) -> service.Plan:
    options: dict[str, object] = {
        "python": sys.executable,
        "home": tmp_path / "home",
        "env": {},
        "config": None,
        "listen_given": False,
        "unix_given": False,
        "redis_env": False,
        "unlock": False,
        "version": "0.0-test",
    }
    chosen = settings(tmp_path, **overrides.pop("flags", {}))  # type: ignore[arg-type]
    return service.plan(chosen, manager, **(options | overrides))  # type: ignore[arg-type]


# --- rendering ------------------------------------------------------------------------------


def test_the_unit_runs_the_sidecar_in_the_foreground_and_restarts_it_on_failure(
    tmp_path: Path,
) -> None:
    unit = unit_sections(service.render_systemd_unit(spec(tmp_path), "1.2.3"))

    run = unit["Service"]
    assert run["ExecStart"].split() == [
        sys.executable,
        "-P",
        "-m",
        "sidecar",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    assert run["Restart"] == "on-failure"
    assert run["KillSignal"] == "SIGTERM"
    assert run["TimeoutStopSec"] == "15"
    assert run["WorkingDirectory"] == f"-{tmp_path / 'data'}"
    assert run["EnvironmentFile"] == f"-{tmp_path / 'config' / 'service.env'}"
    assert run["UMask"] == "0077"
    assert unit["Install"]["WantedBy"] == "default.target"


def test_the_stop_timeout_outlasts_the_shutdown_grace(tmp_path: Path) -> None:
    systemd = make_plan(tmp_path, Manager.systemd, flags={"shutdown_grace": 12.5})
    launchd = make_plan(tmp_path, Manager.launchd, flags={"shutdown_grace": 12.5})

    expected = 18  # ceil(12.5 + the 5 s `mirapi sidecar stop` allows)
    assert expected == service.stop_timeout(12.5, STOP_MARGIN)
    assert unit_sections(systemd.content.decode())["Service"]["TimeoutStopSec"] == str(expected)
    assert plistlib.loads(launchd.content)["ExitTimeOut"] == expected


@pytest.mark.parametrize(
    ("arg", "word"),
    [
        ("/usr/bin/python3", "/usr/bin/python3"),
        ("/data/100%", "/data/100%%"),
        ("/home/ann/$HOME", '"/home/ann/$$HOME"'),
        ("/Application Support/x", '"/Application Support/x"'),
        ('say "hi"\\', '"say \\"hi\\"\\\\"'),
        ("a;b", '"a;b"'),
    ],
)
def test_exec_start_words_escape_specifiers_variables_and_quotes(arg: str, word: str) -> None:
    assert service.systemd_word(arg) == word


def test_a_newline_cannot_smuggle_a_directive_into_the_unit(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="control character"):
        service.systemd_word("/tmp/x\nExecStartPre=/bin/evil")
    bad = spec(tmp_path, working_dir=tmp_path / "a\nb")
    with pytest.raises(ServiceError, match="control character"):
        service.render_systemd_unit(bad, "1")


def test_flags_become_absolute_arguments(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    plan = make_plan(
        tmp_path,
        Manager.launchd,
        flags={"listen": "127.0.0.1:9000"},
        listen_given=True,
        config=config,
        unlock=True,
    )

    args = plistlib.loads(plan.content)["ProgramArguments"]
    assert args[args.index("--listen") + 1] == "127.0.0.1:9000"
    assert args[args.index("--config") + 1] == str(config)
    assert args[args.index("--data-dir") + 1] == str(tmp_path / "data")
    assert args[-1] == "--unlock"
    # The passphrase is not in it; the user adds it, so the file is private already.
    assert plan.mode == 0o600


def test_config_from_the_environment_is_pinned(tmp_path: Path) -> None:
    named = tmp_path / "elsewhere.toml"
    plan = make_plan(tmp_path, Manager.launchd, env={"MIRAPI_CONFIG": str(named)})

    args = plistlib.loads(plan.content)["ProgramArguments"]
    assert args[args.index("--config") + 1] == str(named)


def test_the_launchd_agent_parses_and_restarts_only_after_a_crash(tmp_path: Path) -> None:
    agent = plistlib.loads(service.render_launchd_plist(spec(tmp_path)))

    assert agent["Label"] == "dev.mirapi.sidecar"
    assert agent["ProgramArguments"][:4] == [sys.executable, "-P", "-m", "sidecar"]
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["RunAtLoad"] is True
    assert agent["ExitTimeOut"] == 15
    assert agent["WorkingDirectory"] == str(tmp_path / "data")
    assert agent["StandardErrorPath"] == str(tmp_path / "data" / "sidecar.log")
    assert "EnvironmentVariables" not in agent


def test_the_redis_url_stays_out_of_the_systemd_unit(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, Manager.systemd, env={"MIRAPI_REDIS": REDIS_URL}, redis_env=True)

    assert PASSWORD.encode() not in plan.content
    assert plan.env_updates == {"MIRAPI_REDIS": REDIS_URL}
    assert plan.mode == 0o644


def test_launchd_gets_the_redis_url_in_a_private_plist(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, Manager.launchd, env={"MIRAPI_REDIS": REDIS_URL}, redis_env=True)

    assert plistlib.loads(plan.content)["EnvironmentVariables"] == {"MIRAPI_REDIS": REDIS_URL}
    assert "--redis" not in plistlib.loads(plan.content)["ProgramArguments"]
    assert plan.mode == 0o600
    assert plan.env_updates == {}


def test_the_env_file_keeps_the_users_lines_and_replaces_ours() -> None:
    existing = "# mine\nMIRAPI_MASTER_KEY='kept'\nexport MIRAPI_REDIS='redis://old'\n"

    text = service.env_file_text(existing, {"MIRAPI_REDIS": REDIS_URL})

    assert text == f"# mine\nMIRAPI_MASTER_KEY='kept'\nMIRAPI_REDIS='{REDIS_URL}'\n"


@pytest.mark.parametrize("value", [f"redis://:pa'ss@{PASSWORD}", f"redis://{PASSWORD}\nX=1"])
def test_a_value_the_env_file_cannot_hold_is_refused_unshown(value: str) -> None:
    with pytest.raises(ServiceError) as caught:
        service.env_file_text("", {"MIRAPI_REDIS": value})
    assert "MIRAPI_REDIS" in caught.value.args[0]
    assert PASSWORD not in caught.value.args[0]


def test_the_user_unit_dir_follows_xdg_config_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    xdg = tmp_path / "xdg"
    assert service.unit_path(Manager.systemd, home, {}) == (
        home / ".config/systemd/user/mirapi.service"
    )
    assert service.unit_path(Manager.systemd, home, {"XDG_CONFIG_HOME": str(xdg)}) == (
        xdg / "systemd/user/mirapi.service"
    )
    assert service.unit_path(Manager.launchd, home, {}) == (
        home / "Library/LaunchAgents/dev.mirapi.sidecar.plist"
    )


def test_the_platform_picks_the_manager() -> None:
    assert service.default_manager("linux") is Manager.systemd
    assert service.default_manager("darwin") is Manager.launchd
    with pytest.raises(ServiceError, match="--manager"):
        service.default_manager("win32")


# --- the command, with HOME in tmp ------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    config = tmp_path / "config.toml"
    config.write_text("")
    runner = Cli(tmp_path / "data", config)
    home = tmp_path / "home"
    home.mkdir()
    runner.env["HOME"] = str(home)
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "MIRAPI_REDIS", "MIRAPI_MASTER_KEY"):
        runner.env.pop(name, None)
    for name in [name for name in runner.env if name.startswith("MIRAPI_")]:
        if name not in ("MIRAPI_DATA_DIR", "MIRAPI_CONFIG", "MIRAPI_REQUIRE_REDIS"):
            runner.env.pop(name)
    yield runner
    kill_leftover(runner.state_file)


def home_of(cli: Cli) -> Path:
    return Path(cli.env["HOME"])


def unit_file(cli: Cli) -> Path:
    return home_of(cli) / ".config/systemd/user/mirapi.service"


def plist_file(cli: Cli) -> Path:
    return home_of(cli) / "Library/LaunchAgents/dev.mirapi.sidecar.plist"


def test_install_writes_the_unit_says_what_next_and_will_not_overwrite(cli: Cli) -> None:
    done = cli("sidecar", "install-service", "--manager", "systemd")
    assert done.returncode == 0, done.stderr
    written = unit_file(cli).read_text()
    assert f"--data-dir {cli.data_dir}" in written
    assert f"--config {cli.env['MIRAPI_CONFIG']}" in written
    assert "systemctl --user daemon-reload && systemctl --user enable --now mirapi" in done.stdout

    again = cli("sidecar", "install-service", "--manager", "systemd", "--listen", "127.0.0.1:1")
    assert again.returncode == 1
    assert "--force" in again.stderr
    assert "Traceback" not in again.stderr
    assert unit_file(cli).read_text() == written

    forced = cli(
        "sidecar", "install-service", "--manager", "systemd", "--listen", "127.0.0.1:1", "--force"
    )
    assert forced.returncode == 0, forced.stderr
    assert "--listen 127.0.0.1:1" in unit_file(cli).read_text()
    assert "systemctl --user restart mirapi" in forced.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd is Linux's")
def test_linux_gets_systemd_by_default(cli: Cli) -> None:
    done = cli("sidecar", "install-service")
    assert done.returncode == 0, done.stderr
    assert unit_file(cli).exists()


def test_print_writes_the_unit_to_stdout_only(cli: Cli) -> None:
    done = cli("sidecar", "install-service", "--manager", "systemd", "--print")

    assert done.returncode == 0, done.stderr
    assert "[Service]" in done.stdout
    assert unit_sections(done.stdout)["Service"]["Restart"] == "on-failure"
    assert not (home_of(cli) / ".config").exists()


def test_redis_env_goes_to_a_private_env_file_and_never_on_screen(cli: Cli) -> None:
    env_file = home_of(cli) / ".config/mirapi/service.env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text("MIRAPI_MASTER_KEY='the-users-own'\n")

    done = cli(
        "sidecar", "install-service", "--manager", "systemd", "--redis-env", MIRAPI_REDIS=REDIS_URL
    )

    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert PASSWORD not in unit_file(cli).read_text()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert (
        env_file.read_text() == f"MIRAPI_MASTER_KEY='the-users-own'\nMIRAPI_REDIS='{REDIS_URL}'\n"
    )


def test_redis_env_without_the_variable_names_it(cli: Cli) -> None:
    done = cli("sidecar", "install-service", "--manager", "systemd", "--redis-env")

    assert done.returncode == 1
    assert "$MIRAPI_REDIS" in done.stderr
    assert not unit_file(cli).exists()


def test_what_the_service_will_not_see_is_named(cli: Cli) -> None:
    done = cli(
        "sidecar",
        "install-service",
        "--manager",
        "systemd",
        "--listen",
        "0.0.0.0:8742",
        MIRAPI_REDIS=REDIS_URL,
        MIRAPI_TIMEOUT="5s",
    )

    assert done.returncode == 0, done.stderr
    assert "--redis-env" in done.stderr
    assert "MIRAPI_TIMEOUT" in done.stderr
    assert "mirapi keys create" in done.stderr  # a non-loopback listener needs a client key
    assert PASSWORD not in done.stdout + done.stderr
    assert PASSWORD not in unit_file(cli).read_text()


def test_a_bad_listen_address_is_refused_before_anything_is_written(cli: Cli) -> None:
    done = cli("sidecar", "install-service", "--manager", "systemd", "--listen", "nope")

    assert done.returncode == 1
    assert "--listen" in done.stderr
    assert not unit_file(cli).exists()


def test_install_writes_a_launchd_agent_that_plistlib_reads(cli: Cli) -> None:
    done = cli(
        "sidecar", "install-service", "--manager", "launchd", "--redis-env", MIRAPI_REDIS=REDIS_URL
    )

    assert done.returncode == 0, done.stderr
    agent = plistlib.loads(plist_file(cli).read_bytes())
    assert agent["EnvironmentVariables"] == {"MIRAPI_REDIS": REDIS_URL}
    assert stat.S_IMODE(plist_file(cli).stat().st_mode) == 0o600
    assert f"launchctl load -w {plist_file(cli)}" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr


# --- systemd-analyze and a real run -----------------------------------------------------------


def systemd_verify(unit: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify --user UNIT`, or a skip when it cannot run here."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    runtime = home / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    # A user manager needs a runtime dir; no running systemd is needed.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    done = subprocess.run(
        [tool, "verify", "--user", str(unit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    if done.returncode != 0 and "Failed to initialize manager" in done.stderr:
        pytest.skip(f"systemd-analyze cannot run in this container: {done.stderr.strip()}")
    return done


def test_systemd_analyze_verify_accepts_the_written_unit(cli: Cli) -> None:
    done = cli("sidecar", "install-service", "--manager", "systemd", "--listen", "127.0.0.1:8742")
    assert done.returncode == 0, done.stderr

    verified = systemd_verify(unit_file(cli), home_of(cli))

    assert verified.returncode == 0, verified.stderr
    # verify exits 0 on warnings (an unknown key, a bad value): none may name our unit.
    assert "mirapi.service" not in verified.stderr, verified.stderr


def test_systemd_reads_a_quoted_interpreter_path(tmp_path: Path) -> None:
    # A path with a space and a `%`: systemd finds the file only if the word
    # was quoted and escaped right (verify checks that it is executable).
    python = tmp_path / "Py thon %n" / "python"
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    unit = tmp_path / "mirapi.service"
    command = service.sidecar_command(str(python), data_dir=tmp_path / "data")
    unit.write_text(service.render_systemd_unit(spec(tmp_path, command=command), "1"))

    assert systemd_verify(unit, tmp_path).returncode == 0

    python.unlink()
    missing = systemd_verify(unit, tmp_path)
    assert missing.returncode != 0
    assert "Py thon %n/python" in missing.stderr


def test_the_service_command_serves_and_stops_cleanly_on_sigterm(cli: Cli) -> None:
    done = cli("sidecar", "install-service", "--manager", "launchd", "--listen", "127.0.0.1:0")
    assert done.returncode == 0, done.stderr
    agent = plistlib.loads(plist_file(cli).read_bytes())
    # What a service manager gives it: no shell, no MIRAPI_* from a profile.
    env = {
        "HOME": cli.env["HOME"],
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        **agent.get("EnvironmentVariables", {}),
    }
    Path(agent["WorkingDirectory"]).mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        agent["ProgramArguments"],
        cwd=agent["WorkingDirectory"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + WAIT
        while not cli.state_file.exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the sidecar did not start"
            time.sleep(0.05)
        assert cli.state()["pid"] == process.pid

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=agent["ExitTimeOut"])
        assert process.returncode == 0, stderr
        assert not cli.state_file.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
