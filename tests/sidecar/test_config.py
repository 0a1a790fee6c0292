"""Tests for sidecar.config: layers, parsing and the messages a user sees."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sidecar import config, paths
from sidecar.config import ConfigError, Settings, is_loopback_listen, listen_address, load

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def no_default_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the platformdirs config file somewhere empty, so the developer's own
    ~/.config/mirapi/config.toml never leaks into a test."""
    default = tmp_path / "default-config" / "config.toml"
    monkeypatch.setattr(paths, "default_config_file", lambda: default)
    return default


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(file: Path | None, env: dict[str, str], flags: dict[str, object]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(file, env, flags)
    return caught.value


# --- defaults and the table ---


def test_defaults() -> None:
    settings = load(None, {}, {})
    assert settings == Settings(data_dir=paths.data_dir({}))
    assert settings.listen == "127.0.0.1:8742"
    assert settings.unix is None
    assert settings.redis is None
    assert settings.max_body == 10 * MIB
    assert settings.allow_hosts == ()
    assert settings.allow_private is False
    assert settings.record_bodies is False
    assert settings.timeout == 30.0
    assert settings.log_level == "info"
    assert settings.job_lease == 60.0
    assert settings.job_workers == 4
    assert settings.server_names == ()
    assert settings.shutdown_grace == 10.0
    assert settings.read_timeout == 30.0
    assert settings.cache_max_bytes == 32 * MIB
    assert settings.rate_limit is None


def test_every_field_is_a_key_with_a_parser() -> None:
    assert config.KEYS == tuple(item.name for item in dataclasses.fields(Settings))


def test_settings_are_frozen() -> None:
    settings = load(None, {}, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.timeout = 1.0  # type: ignore[misc]


def test_repr_hides_the_redis_url() -> None:
    settings = load(None, {"MIRAPI_REDIS": "redis://:hunter2@cache:6379/0"}, {})
    assert settings.redis == "redis://:hunter2@cache:6379/0"
    assert "hunter2" not in repr(settings)


# --- precedence: flags > env > file > defaults ---


def test_file_beats_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "127.0.0.1:9000"\njob_workers = 8\n')
    settings = load(path, {}, {})
    assert settings.listen == "127.0.0.1:9000"
    assert settings.job_workers == 8
    assert settings.timeout == 30.0


def test_env_beats_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "127.0.0.1:9000"\njob_workers = 8\n')
    settings = load(path, {"MIRAPI_LISTEN": "127.0.0.1:9001"}, {})
    assert settings.listen == "127.0.0.1:9001"
    assert settings.job_workers == 8


def test_flags_beat_env(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "127.0.0.1:9000"\n')
    env = {"MIRAPI_LISTEN": "127.0.0.1:9001", "MIRAPI_JOB_WORKERS": "2"}
    settings = load(path, env, {"listen": "127.0.0.1:9002"})
    assert settings.listen == "127.0.0.1:9002"
    assert settings.job_workers == 2


def test_flag_none_or_empty_list_is_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, 'allow_hosts = ["api.internal"]\nallow_private = true\n')
    settings = load(path, {}, {"listen": None, "allow_private": None, "allow_hosts": []})
    assert settings.listen == "127.0.0.1:8742"
    assert settings.allow_private is True
    assert settings.allow_hosts == ("api.internal",)


def test_flag_false_is_given(tmp_path: Path) -> None:
    path = write(tmp_path, "allow_private = true\n")
    assert load(path, {}, {"allow_private": False}).allow_private is False


def test_flag_list_replaces_lower_layers(tmp_path: Path) -> None:
    path = write(tmp_path, 'allow_hosts = ["api.internal"]\n')
    settings = load(path, {}, {"allow_hosts": ["localhost"]})
    assert settings.allow_hosts == ("localhost",)


def test_empty_env_var_is_unset(tmp_path: Path) -> None:
    path = write(tmp_path, 'log_level = "debug"\n')
    assert load(path, {"MIRAPI_LOG_LEVEL": ""}, {}).log_level == "debug"


def test_data_dir_layers(tmp_path: Path) -> None:
    path = write(tmp_path, f'data_dir = "{tmp_path / "from-file"}"\n')
    assert load(path, {}, {}).data_dir == tmp_path / "from-file"
    env = {"MIRAPI_DATA_DIR": str(tmp_path / "from-env")}
    assert load(path, env, {}).data_dir == tmp_path / "from-env"
    flags = {"data_dir": tmp_path / "from-flag"}
    assert load(path, env, flags).data_dir == tmp_path / "from-flag"


def test_data_dir_default_follows_the_env_given() -> None:
    assert load(None, {"MIRAPI_DATA_DIR": "/srv/mirapi"}, {}).data_dir == Path("/srv/mirapi")


def test_data_dir_expands_home_and_relative_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/ann")
    assert load(None, {}, {"data_dir": "~/mirapi"}).data_dir == Path("/home/ann/mirapi")
    assert load(None, {}, {"data_dir": "rel"}).data_dir == Path.cwd() / "rel"


# --- which file ---


def test_missing_default_file_is_fine(no_default_file: Path) -> None:
    assert not no_default_file.exists()
    assert load(None, {}, {}).listen == "127.0.0.1:8742"


def test_default_file_is_read_when_present(no_default_file: Path) -> None:
    no_default_file.parent.mkdir()
    no_default_file.write_text('log_level = "error"\n')
    assert load(None, {}, {}).log_level == "error"


def test_mirapi_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'log_level = "warning"\n', name="other.toml")
    assert load(None, {"MIRAPI_CONFIG": str(path)}, {}).log_level == "warning"


def test_explicit_file_beats_mirapi_config(tmp_path: Path) -> None:
    chosen = write(tmp_path, 'log_level = "debug"\n', name="chosen.toml")
    ignored = write(tmp_path, 'log_level = "error"\n', name="ignored.toml")
    assert load(chosen, {"MIRAPI_CONFIG": str(ignored)}, {}).log_level == "debug"


def test_missing_explicit_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    error = error_of(missing, {}, {})
    assert str(error) == f"{missing}: no such config file"
    assert error.source == str(missing)


def test_missing_file_named_by_mirapi_config(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    error = error_of(None, {"MIRAPI_CONFIG": str(missing)}, {})
    assert str(error) == f"{missing}: no such config file"


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "127.0.0.1:9000"\ntimeout = = 3\n')
    message = str(error_of(path, {}, {}))
    assert message.startswith(f"{path}: invalid TOML")
    assert "line 2" in message


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'log_level = "\xff"\n')
    assert str(error_of(path, {}, {})) == f"{path}: not UTF-8 text"


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    assert "cannot read" in str(error_of(tmp_path, {}, {}))  # a directory


# --- unknown keys ---


def test_unknown_file_key(tmp_path: Path) -> None:
    path = write(tmp_path, "retires = 3\n")
    error = error_of(path, {}, {})
    assert str(error).startswith(f"{path}: unknown key 'retires'")
    assert error.key == "retires"


def test_unknown_file_key_suggests_the_near_one(tmp_path: Path) -> None:
    path = write(tmp_path, 'allow_host = ["a"]\n')
    assert str(error_of(path, {}, {})).endswith("(did you mean 'allow_hosts'?)")


def test_file_table_is_an_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[sidecar]\nlisten = '127.0.0.1:1'\n")
    assert "unknown key 'sidecar'" in str(error_of(path, {}, {}))


def test_unknown_flag() -> None:
    error = error_of(None, {}, {"foreground": True})
    assert "unknown flag 'foreground'" in str(error)


def test_other_mirapi_env_vars_are_ignored() -> None:
    env = {
        "MIRAPI_MASTER_KEY": "correct horse",
        "MIRAPI_REQUIRE_REDIS": "1",
        "MIRAPI_RETIRES": "3",
        "MIRAPI_CONFIG": "",
    }
    assert load(None, env, {}) == load(None, {}, {})


# --- bad values name their key, in every layer ---

BAD_VALUES = [
    ("listen", "nonsense"),
    ("listen", "127.0.0.1:65536"),
    ("listen", "127.0.0.1:70000"),
    ("listen", "::1:8742"),
    ("listen", "[nope]:8742"),
    ("listen", "999.1.1.1:80"),
    ("listen", "bad_host:80"),
    ("redis", "http://cache:6379"),
    ("redis", "redis://"),
    ("max_body", "10 parsecs"),
    ("max_body", "0"),
    ("allow_hosts", "https://api.example.com"),
    ("allow_private", "maybe"),
    ("record_bodies", "2"),
    ("timeout", "soon"),
    ("timeout", "30"),
    ("timeout", "0s"),
    ("log_level", "verbose"),
    ("job_lease", "-5s"),
    ("job_workers", "0"),
    ("job_workers", "four"),
    ("server_names", "a b"),
    ("shutdown_grace", "later"),
    ("read_timeout", "0ms"),
    ("cache_max_bytes", "lots"),
    ("rate_limit", "100/fortnight"),
    ("rate_limit", "0/min"),
    ("unix", "/tmp/" + "s" * 200),
]


@pytest.mark.parametrize(("key", "text"), BAD_VALUES)
def test_bad_value_in_file_names_file_and_key(tmp_path: Path, key: str, text: str) -> None:
    path = write(tmp_path, f"{key} = {text!r}\n".replace("'", '"'))
    error = error_of(path, {}, {})
    assert str(error).startswith(f"{path}: {key}: ")
    assert (error.key, error.source) == (key, str(path))


@pytest.mark.parametrize(("key", "text"), BAD_VALUES)
def test_bad_value_in_env_names_the_variable(key: str, text: str) -> None:
    name = "MIRAPI_" + key.upper()
    error = error_of(None, {name: text}, {})
    assert str(error).startswith(f"{name}: ")
    assert (error.key, error.source) == (key, name)


@pytest.mark.parametrize(("key", "text"), BAD_VALUES)
def test_bad_value_in_flags_names_the_flag(key: str, text: str) -> None:
    error = error_of(None, {}, {key: text})
    assert str(error).startswith(f"{config.flag_name(key)}: ")
    assert error.key == key


def test_messages_read_well(tmp_path: Path) -> None:
    assert str(error_of(None, {"MIRAPI_MAX_BODY": "10 parsecs"}, {})) == (
        "MIRAPI_MAX_BODY: '10 parsecs' is not a size (use bytes or 512KiB, 10MiB, 1GB)"
    )
    assert str(error_of(None, {}, {"listen": "127.0.0.1:70000"})) == (
        "--listen: port must be 0-65535 (0: any free port), got 70000"
    )
    assert str(error_of(None, {}, {"allow_hosts": ["a b"]})).startswith("--allow-host: ")
    path = write(tmp_path, "job_workers = 2.5\n")
    assert str(error_of(path, {}, {})) == f"{path}: job_workers: 2.5 is not a whole number"


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("listen = 8742", "listen"),
        ("allow_private = 1", "allow_private"),
        ("max_body = true", "max_body"),
        ("max_body = 1.5", "max_body"),
        ("timeout = true", "timeout"),
        ("timeout = nan", "timeout"),
        ("timeout = inf", "timeout"),
        ("allow_hosts = [1]", "allow_hosts"),
        ("allow_hosts = ['']", "allow_hosts"),
        ("log_level = ['info']", "log_level"),
        ("redis = 6379", "redis"),
    ],
)
def test_wrong_toml_type_names_the_key(tmp_path: Path, line: str, key: str) -> None:
    path = write(tmp_path, line + "\n")
    assert str(error_of(path, {}, {})).startswith(f"{path}: {key}: ")


# --- durations and sizes ---


@pytest.mark.parametrize(
    ("toml", "seconds"),
    [("30", 30.0), ("1.5", 1.5), ('"30s"', 30.0), ('"250ms"', 0.25), ('"5m"', 300.0)],
)
def test_durations_in_file(tmp_path: Path, toml: str, seconds: float) -> None:
    path = write(tmp_path, f"timeout = {toml}\njob_lease = {toml}\n")
    settings = load(path, {}, {})
    assert (settings.timeout, settings.job_lease) == (seconds, seconds)


def test_durations_in_env() -> None:
    env = {"MIRAPI_TIMEOUT": "2m", "MIRAPI_READ_TIMEOUT": "500ms", "MIRAPI_SHUTDOWN_GRACE": "0s"}
    settings = load(None, env, {})
    assert (settings.timeout, settings.read_timeout, settings.shutdown_grace) == (120.0, 0.5, 0.0)


def test_duration_string_without_unit_is_refused() -> None:
    message = str(error_of(None, {"MIRAPI_TIMEOUT": "30"}, {}))
    assert message == "MIRAPI_TIMEOUT: '30' has no unit: write 30s for seconds or 30ms"


def test_duration_flag_may_be_a_number() -> None:
    assert load(None, {}, {"timeout": 5}).timeout == 5.0


@pytest.mark.parametrize(
    ("toml", "size"), [("1024", 1024), ('"10MiB"', 10 * MIB), ('"512kb"', 512_000)]
)
def test_sizes_in_file(tmp_path: Path, toml: str, size: int) -> None:
    path = write(tmp_path, f"max_body = {toml}\ncache_max_bytes = {toml}\n")
    settings = load(path, {}, {})
    assert (settings.max_body, settings.cache_max_bytes) == (size, size)


def test_sizes_in_env() -> None:
    env = {"MIRAPI_MAX_BODY": "1GiB", "MIRAPI_CACHE_MAX_BYTES": "0"}
    settings = load(None, env, {})
    assert (settings.max_body, settings.cache_max_bytes) == (1024 * MIB, 0)


# --- booleans, lists, counts, rates ---


@pytest.mark.parametrize("word", ["true", "1", "yes", "on", "TRUE", " Yes "])
def test_true_from_env(word: str) -> None:
    env = {"MIRAPI_ALLOW_PRIVATE": word, "MIRAPI_RECORD_BODIES": word}
    settings = load(None, env, {})
    assert settings.allow_private is True
    assert settings.record_bodies is True


@pytest.mark.parametrize("word", ["false", "0", "no", "off", "False"])
def test_false_from_env(tmp_path: Path, word: str) -> None:
    path = write(tmp_path, "allow_private = true\n")
    assert load(path, {"MIRAPI_ALLOW_PRIVATE": word}, {}).allow_private is False


def test_host_lists_from_env_are_comma_separated() -> None:
    env = {"MIRAPI_ALLOW_HOSTS": " Localhost, api.internal,,10.0.0.5,", "MIRAPI_SERVER_NAMES": "a"}
    settings = load(None, env, {})
    assert settings.allow_hosts == ("localhost", "api.internal", "10.0.0.5")
    assert settings.server_names == ("a",)


def test_host_lists_from_file_are_lowered_and_deduplicated(tmp_path: Path) -> None:
    path = write(tmp_path, 'server_names = ["Sidecar.Local", "sidecar.local", "b"]\n')
    assert load(path, {}, {}).server_names == ("sidecar.local", "b")


def test_job_workers_from_env() -> None:
    assert load(None, {"MIRAPI_JOB_WORKERS": "16"}, {}).job_workers == 16


@pytest.mark.parametrize(
    ("text", "normal", "parts"),
    [
        ("100/min", "100/min", (100, 60.0)),
        ("5 / SEC", "5/sec", (5, 1.0)),
        ("1/hour", "1/hour", (1, 3600.0)),
    ],
)
def test_rate_limit(text: str, normal: str, parts: tuple[int, float]) -> None:
    assert load(None, {"MIRAPI_RATE_LIMIT": text}, {}).rate_limit == normal
    assert config.parse_rate(normal) == parts


def test_log_level_is_case_insensitive() -> None:
    assert load(None, {"MIRAPI_LOG_LEVEL": "DEBUG"}, {}).log_level == "debug"


# --- redis and the unix socket ---


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://:pw@cache:6380", "unix:///run/redis.sock"]
)
def test_redis_urls(url: str) -> None:
    assert load(None, {}, {"redis": url}).redis == url


def test_bad_redis_url_is_not_echoed() -> None:
    message = str(error_of(None, {"MIRAPI_REDIS": "http://:hunter2@cache"}, {}))
    assert message.startswith("MIRAPI_REDIS: must be a redis://")
    assert "hunter2" not in message


def test_unix_socket_path() -> None:
    assert load(None, {"MIRAPI_UNIX": "/run/mirapi.sock"}, {}).unix == "/run/mirapi.sock"


# --- the listen address ---


@pytest.mark.parametrize(
    ("listen", "address", "loopback"),
    [
        ("127.0.0.1:8742", ("127.0.0.1", 8742), True),
        ("127.0.0.2:1", ("127.0.0.2", 1), True),
        ("localhost:65535", ("localhost", 65535), True),
        ("[::1]:8742", ("::1", 8742), True),
        ("[::ffff:127.0.0.1]:8742", ("::ffff:127.0.0.1", 8742), True),
        ("0.0.0.0:8742", ("0.0.0.0", 8742), False),
        ("[::]:8742", ("::", 8742), False),
        ("192.168.1.10:80", ("192.168.1.10", 80), False),
        ("sidecar.internal:80", ("sidecar.internal", 80), False),
    ],
)
def test_listen(listen: str, address: tuple[str, int], loopback: bool) -> None:
    settings = load(None, {"MIRAPI_LISTEN": listen}, {})
    assert settings.listen == listen
    assert listen_address(settings) == address
    assert is_loopback_listen(settings) is loopback


def test_listen_is_normalised() -> None:
    assert load(None, {}, {"listen": " 127.0.0.1:08742 "}).listen == "127.0.0.1:8742"


def test_ipv6_listen_needs_brackets() -> None:
    message = str(error_of(None, {"MIRAPI_LISTEN": "::1:8742"}, {}))
    assert "brackets" in message
