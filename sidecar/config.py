"""Configuration: `load(file, env, flags) -> Settings`, as SPEC §3a describes.

Four layers, later ones winning:

    defaults (the Settings class)  <  config.toml  <  MIRAPI_<KEY> env  <  flags

The table of keys is the `Settings` class itself: each field names its
default and its parser, so adding a key is one line. A parser takes whatever
the layer holds (TOML value, env string or flag value) and returns the typed
value or raises ValueError with a reason; `load` adds the key and the source,
so every message reads like

    /home/ann/.config/mirapi/config.toml: unknown key 'retires'
    MIRAPI_MAX_BODY: '10 parsecs' is not a size (use bytes or 512KiB, 10MiB, 1GB)
    --listen: port must be 0-65535 (0: any free port), got 70000

The file and the flags are strict (an unknown key stops start-up). The
environment is not: only `MIRAPI_<KEY>` for known keys is read, because other
MIRAPI_ variables (MIRAPI_MASTER_KEY, MIRAPI_CONFIG, ...) live there too.
An empty variable counts as unset.

Durations: a TOML number is seconds (`timeout = 30`); a string needs a unit
(`"30s"`, `"250ms"`), because a bare number in a header means milliseconds
(SPEC §2.6) and `MIRAPI_TIMEOUT=30` would be read one way by half the users
and the other way by the rest.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sidecar import bounded, paths, redis_url
from sidecar.durations import parse_duration, parse_size
from sidecar.llm.prices import Price, parse_price_overrides

_T = TypeVar("_T")
_Parser = Callable[[object], _T]

ENV_PREFIX = "MIRAPI_"
LOG_LEVELS = ("debug", "info", "warning", "error")
RATE_WINDOWS = {"sec": 1.0, "min": 60.0, "hour": 3600.0}

_PARSE = "parse"
_MIB = 1024 * 1024
# sun_path is 108 bytes on Linux and 104 on the BSDs and macOS, NUL included;
# a longer socket path fails at bind time with a message that names no key.
_MAX_UNIX_PATH = 107 if sys.platform.startswith("linux") else 103
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?", re.I)
_DIGITS = re.compile(r"[0-9]+")
_DOTTED_DIGITS = re.compile(r"[0-9.]+")
_RATE = re.compile(r"(\d+)\s*/\s*(sec|min|hour)", re.I | re.ASCII)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
# The CLI spells this one in the singular (`--allow-host H`, repeatable).
_FLAG_SPELLING = {"allow_hosts": "--allow-host"}


class ConfigError(Exception):
    """A config problem that stops start-up; the message names the source and key."""

    def __init__(self, message: str, *, source: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.key = key


# --- parsers: value from any layer -> typed value, or ValueError(reason) ---


def _kind(value: object) -> str:
    return type(value).__name__


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    text = value.strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _split_listen(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host without brackets, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port (e.g. 127.0.0.1:8742 or [::1]:8742)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{text!r}: put an IPv6 address in brackets, e.g. [::1]:8742")
    elif _DOTTED_DIGITS.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address") from None
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name")
    if not _DIGITS.fullmatch(port_text):
        raise ValueError(f"{port_text!r} is not a port number")
    port = int(port_text)
    # Port 0 asks the OS for a free port; the state file records the real one.
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535 (0: any free port), got {port}")
    return host, port


def _listen(value: object) -> str:
    host, port = _split_listen(_string(value))
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _path(value: object) -> Path:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return paths.expand(_string(value))


def _unix_socket(value: object) -> str:
    path = str(_path(value))
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ValueError(f"socket path is too long ({_MAX_UNIX_PATH} bytes at most): {path}")
    return path


def _redis_url(value: object) -> str:
    text = _string(value)
    scheme, sep, rest = text.partition("://")
    # The value is never echoed: a Redis URL may carry a password.
    if not sep or scheme.lower() not in redis_url.SCHEMES or not rest:
        raise ValueError(
            "must be a redis://, rediss://, unix://, redis+cluster://, rediss+cluster://"
            " or redis+sentinel:// URL (value not shown)"
        )
    redis_url.parse_url(text)  # a cluster's or Sentinel's hosts (and SERVICE)
    return text


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(f"{value!r} is not a boolean (use true/false, yes/no, 1/0)")
    raise ValueError(f"expected true or false, got {_kind(value)}")


def _count(minimum: int) -> _Parser[int]:
    def parse(value: object) -> int:
        if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not a whole number")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _size(*, zero_ok: bool) -> _Parser[int]:
    def parse(value: object) -> int:
        if isinstance(value, str):
            value = parse_size(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(
                f"expected a size such as 10MiB or a number of bytes, got {_kind(value)}"
            )
        if value < 0 or (value == 0 and not zero_ok):
            raise ValueError(f"must be {'0' if zero_ok else '1'} or more bytes, got {value}")
        return value

    return parse


def _seconds(*, zero_ok: bool) -> _Parser[float]:
    def parse(value: object) -> float:
        if isinstance(value, str):
            text = value.strip()
            if text[-1:].isdigit():
                raise ValueError(f"{text!r} has no unit: write {text}s for seconds or {text}ms")
            value = parse_duration(text)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(
                f"expected a duration such as 30s or a number of seconds, got {_kind(value)}"
            )
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"{value} is not a number of seconds")
        if seconds < 0 or (seconds == 0 and not zero_ok):
            bound = "0 seconds or more" if zero_ok else "more than 0 seconds"
            raise ValueError(f"must be {bound}, got {value}")
        return seconds

    return parse


def _names(value: object) -> tuple[str, ...]:
    """A host-name list: a TOML list, a flag's list, or `a,b` in the environment."""
    if isinstance(value, str):
        # A trailing or doubled comma in an env var is a typo, not a name.
        items: list[object] = [item for item in value.split(",") if item.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"expected a list of host names, got {_kind(value)}")
    names: list[str] = []
    for item in items:
        name = _string(item).lower()  # DNS names are case-insensitive
        if "://" in name or any(char.isspace() for char in name):
            raise ValueError(f"{name!r} is not a host name (no scheme, no spaces)")
        if name not in names:
            names.append(name)
    return tuple(names)


def _log_level(value: object) -> str:
    level = _string(value).lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def parse_rate(text: str) -> tuple[int, float]:
    """`"100/min"` -> (100, 60.0): requests allowed per window of seconds. Raises ValueError."""
    match = _RATE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a rate (use N/sec, N/min or N/hour, e.g. 100/min)")
    count = int(match.group(1))
    if count < 1:
        raise ValueError(f"{text!r}: the count must be at least 1")
    return count, RATE_WINDOWS[match.group(2).lower()]


def _rate(value: object) -> str:
    text = _string(value)
    count, _ = parse_rate(text)
    return f"{count}/{text.rpartition('/')[2].strip().lower()}"  # "5 / SEC" -> "5/sec"


def _llm(value: object) -> dict[str, Price]:
    """The `[llm]` table: `prices`, each `"provider/model" = {input, output, ...}`."""
    if not isinstance(value, Mapping):
        raise ValueError('must be a table: [llm.prices."openai/gpt-4o"] in the config file')
    unknown = [key for key in value if key != "prices"]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: prices)")
    prices = value.get("prices", {})
    if not isinstance(prices, Mapping):
        raise ValueError('prices: must be tables such as [llm.prices."openai/gpt-4o"]')
    return parse_price_overrides(prices)


def _key(default: _T, parse: _Parser[_T], *, secret: bool = False) -> _T:
    """A Settings field: its default and the parser every layer goes through."""
    return field(default=default, metadata={_PARSE: parse}, repr=not secret)


# --- the settings: one line per key ---


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The sidecar's validated configuration. Build it with `load`."""

    listen: str = _key("127.0.0.1:8742", _listen)
    unix: str | None = _key(None, _unix_socket)
    redis: str | None = _key(None, _redis_url, secret=True)  # the URL may hold a password
    data_dir: Path = field(default_factory=paths.data_dir, metadata={_PARSE: _path})
    max_body: int = _key(10 * _MIB, _size(zero_ok=False))
    allow_hosts: tuple[str, ...] = _key((), _names)
    allow_private: bool = _key(False, _flag)
    record_bodies: bool = _key(False, _flag)
    timeout: float = _key(30.0, _seconds(zero_ok=False))
    log_level: str = _key("info", _log_level)
    job_lease: float = _key(60.0, _seconds(zero_ok=False))
    job_workers: int = _key(4, _count(1))
    server_names: tuple[str, ...] = _key((), _names)
    shutdown_grace: float = _key(10.0, _seconds(zero_ok=True))  # in-flight work on SIGTERM
    read_timeout: float = _key(30.0, _seconds(zero_ok=False))  # slow clients
    # 32 MiB: with the ~60 MB idle sidecar a full cache stays under the 100 MB
    # plateau the memory soak holds it to (bench/README.md, Memory).
    cache_max_bytes: int = _key(32 * _MIB, _size(zero_ok=True))  # 0: cache nothing
    rate_limit: str | None = _key(None, _rate)
    # Each lookup cache (parsed URLs, Host checks, header names): bytes, 0: none.
    lookup_cache_max_bytes: int = _key(bounded.DEFAULT_MAX_BYTES, _size(zero_ok=True))
    # [llm.prices."provider/model"]: USD per million tokens, over the price package's.
    llm: Mapping[str, Price] = field(default_factory=dict, metadata={_PARSE: _llm})


_PARSERS: dict[str, _Parser[Any]] = {
    item.name: item.metadata[_PARSE] for item in dataclasses.fields(Settings)
}
KEYS: tuple[str, ...] = tuple(_PARSERS)


def env_var(key: str) -> str:
    """The environment variable for `key`: `max_body` -> `MIRAPI_MAX_BODY`."""
    return ENV_PREFIX + key.upper()


def flag_name(key: str) -> str:
    """How the CLI spells the flag for `key`, for messages: `data_dir` -> `--data-dir`."""
    return _FLAG_SPELLING.get(key, "--" + key.replace("_", "-"))


# --- loading ---


def load(file: Path | None, env: Mapping[str, str], flags: Mapping[str, object]) -> Settings:
    """Settings from `file` (TOML), `env` and `flags`, flags winning; raises ConfigError.

    `file` None means `$MIRAPI_CONFIG` if set (it must exist), else the
    platformdirs default if it exists. A flag whose value is None, or an empty
    list, was not given.
    """
    # data_dir's default reads `env`, not os.environ as Settings() alone would.
    values: dict[str, Any] = {"data_dir": paths.data_dir(env)}
    path, explicit = (file, True) if file is not None else _default_file(env)
    source = str(path)
    for key, raw in _read_toml(path, explicit=explicit).items():
        if key not in _PARSERS:
            raise ConfigError(f"{source}: unknown key {key!r}{_hint(key)}", source=source, key=key)
        values[key] = _parse(key, raw, source=source, where=f"{source}: {key}")
    for key in KEYS:
        text = env.get(env_var(key), "")
        if text:
            values[key] = _parse(key, text, source=env_var(key), where=env_var(key))
    for key, raw in flags.items():
        if raw is None or (isinstance(raw, list | tuple) and not raw):
            continue  # an option not given on the command line
        if key not in _PARSERS:
            raise ConfigError(f"unknown flag {key!r}", source="flags", key=key)
        values[key] = _parse(key, raw, source=flag_name(key), where=flag_name(key))
    return Settings(**values)


def _default_file(env: Mapping[str, str]) -> tuple[Path, bool]:
    named = paths.env_path(env, paths.CONFIG_ENV)
    return (named, True) if named is not None else (paths.default_config_file(), False)


def _read_toml(path: Path, *, explicit: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such config file", source=str(path)) from None
        return {}  # no config.toml in the default place: defaults and env only
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message carries the line and column, never the text.
        raise ConfigError(f"{path}: invalid TOML: {exc}", source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}", source=str(path)) from None


def _parse(key: str, raw: object, *, source: str, where: str) -> Any:
    try:
        return _PARSERS[key](raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}", source=source, key=key) from None


def _hint(key: str) -> str:
    close = difflib.get_close_matches(key.replace("-", "_").lower(), KEYS, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- questions about loaded settings ---


def listen_address(settings: Settings) -> tuple[str, int]:
    """(host, port) of `settings.listen`, the host without IPv6 brackets."""
    return _split_listen(settings.listen)


def is_loopback_listen(settings: Settings) -> bool:
    """Whether the TCP listener is reachable from this machine only.

    Only `localhost` and loopback addresses count: another name may resolve
    anywhere, so it is treated as exposed.
    """
    host, _ = listen_address(settings)
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    # Python 3.11 does not call ::ffff:127.0.0.1 loopback; the v4 it maps does.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
