"""curl's `-w`/`--write-out`: a format with `%{variable}`s, printed after the transfer.

Variables: `http_code` (`response_code`), `time_total`, `size_download`,
`size_header`, `url_effective`, `header_json`, `num_redirects`, `method`,
`content_type`, `exitcode`, and `%header{name}`. `\\n`, `\\r`, `\\t` are
turned into their characters (any other backslash pair is printed as it
is) and `%%` into `%`, as curl does; `@file` (or
`@-`) reads the format from a file. Written to stdout even when the call
failed (`http_code` is then `000`), like curl.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import orjson

from mirapi_cli.commands.curl_data import read_source

Headers = list[tuple[str, str]]


@dataclass
class Stats:
    """What `-w` can show about the transfer, filled in as it goes."""

    url_effective: str
    method: str
    http_code: int = 0
    size_download: int = 0
    size_header: int = 0
    headers: Headers = field(default_factory=list)
    num_redirects: int = 0
    exitcode: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def time_total(self) -> float:
        """Seconds from the start to the end of the transfer (or now)."""
        return (self.finished or time.monotonic()) - self.started


def header_json(headers: Headers) -> str:
    """curl's `%{header_json}`: names lower-cased, each with the list of its values."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name.lower(), []).append(value)
    lines = [
        orjson.dumps(name).decode() + ":" + orjson.dumps(values).decode()
        for name, values in grouped.items()
    ]
    return "{" + ",\n".join(lines) + "\n}"


def _variable(name: str, stats: Stats) -> str | None:
    values = {
        "http_code": f"{stats.http_code:03d}",
        "response_code": f"{stats.http_code:03d}",
        "time_total": f"{stats.time_total():.6f}",
        "size_download": str(stats.size_download),
        "size_header": str(stats.size_header),
        "url_effective": stats.url_effective,
        "num_redirects": str(stats.num_redirects),
        "method": stats.method,
        "exitcode": str(stats.exitcode),
    }
    if name == "header_json":
        return header_json(stats.headers)
    if name == "content_type":
        return next((v for n, v in stats.headers if n.lower() == "content-type"), "")
    return values.get(name)


_TOKEN = re.compile(r"%%|%\{([^}]*)\}|%header\{([^}]*)\}|\\.", re.DOTALL)
#: curl turns these three into their characters and prints any other `\X` as it is.
_ESCAPES = {"\\n": "\n", "\\r": "\r", "\\t": "\t"}


def render(template: str, stats: Stats) -> tuple[str, list[str]]:
    """The text `-w template` prints, and the unknown variable names (curl warns of each)."""
    unknown: list[str] = []

    def expand(match: re.Match[str]) -> str:
        token, variable, header = match.group(0), match.group(1), match.group(2)
        if token == "%%":
            return "%"
        if token.startswith("\\"):
            return _ESCAPES.get(token, token)
        if header is not None:
            # curl 7.88 shows the first of a repeated header.
            wanted = header.lower()
            return next((v for n, v in stats.headers if n.lower() == wanted), "")
        value = _variable(variable, stats)
        if value is None:
            unknown.append(variable)
            return ""
        return value

    return _TOKEN.sub(expand, template), unknown


def template_of(value: str) -> str:
    """The `-w` value, or the file it names with `@file` (`@-`: stdin)."""
    if value.startswith("@"):
        return read_source(value[1:]).decode("utf-8", "replace")
    return value
