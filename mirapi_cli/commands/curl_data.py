"""curl's request body flags, each with curl's meaning (checked against curl itself).

`-d`/`--data`: text, or `@file` (`@-`: stdin) with carriage returns and
newlines stripped. `--data-raw`: text, `@` is just a character.
`--data-binary`: text, or `@file` byte for byte. `--data-urlencode`:
`content`, `=content`, `name=content`, `@file`, `name@file`, the content
percent-encoded as curl does (all but `A-Z a-z 0-9 - . _ ~`, and a space
as `+`). `--json`: as
`--data-binary`, and it sets the JSON content type and accept headers.
All pieces are joined in typed order with `&` (a `--json` piece is glued on
without one, as curl does). A data file that cannot be read makes an empty
piece and a warning, as curl 7.88 does (no exit 26: that is `-F`'s).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

from mirapi_cli.errors import CliError

#: curl's exit code for a file it could not read.
READ_ERROR = 26

#: The option (its Python name) for each kind of piece.
DATA_OPTIONS = frozenset({"data", "data_raw", "data_binary", "data_urlencode", "json_data"})


@dataclass(frozen=True)
class Body:
    """The joined pieces, whether any came from `--json`, and curl's warnings."""

    data: bytes
    is_json: bool
    warnings: tuple[str, ...] = ()


class Unreadable(Exception):
    """A data file that could not be read: curl warns and sends the piece empty."""

    def __init__(self, source: str) -> None:
        super().__init__(f"could not read data from file {source!r}, this makes an empty piece")
        self.warning = str(self)


def read_source(source: str) -> bytes:
    """The bytes of file `source`, or stdin for `-`."""
    try:
        return sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {source}: {error.strerror}", READ_ERROR) from None


def read_data(value: str, *, binary: bool) -> bytes:
    """`-d`/`--data-binary`'s value: text, `@file` or `@-` for stdin."""
    if not value.startswith("@"):
        return value.encode()
    data = read_source(value[1:])
    # curl -d strips carriage returns and newlines from a file; --data-binary keeps bytes.
    return data if binary else data.replace(b"\r", b"").replace(b"\n", b"")


def _data_file(value: str, *, binary: bool) -> bytes:
    """As `read_data`, but a file that cannot be read raises Unreadable (curl goes on)."""
    try:
        return read_data(value, binary=binary)
    except CliError:
        raise Unreadable(value[1:]) from None


def urlencoded(value: str) -> bytes:
    """`--data-urlencode VALUE` in curl's five forms."""
    equals, at = value.find("="), value.find("@")
    # curl looks for '=' first, then '@': `a@b=c` is name `a@b` and content `c`.
    split = equals if equals >= 0 else at
    if split < 0:
        return _escape(value.encode())
    name, separator, rest = value[:split], value[split], value[split + 1 :]
    if separator == "@":
        try:
            content = read_source(rest)
        except CliError:
            raise Unreadable(rest) from None
    else:
        content = rest.encode()
    encoded = _escape(content)
    return name.encode() + b"=" + encoded if name else encoded


def _escape(content: bytes) -> bytes:
    # As curl 7.88 does for --data-urlencode: a space becomes '+'.
    return quote_plus(content, safe="").encode()


def piece(option: str, value: str) -> bytes:
    """The bytes one data option adds to the body."""
    if option == "data":
        return _data_file(value, binary=False)
    if option in ("data_binary", "json_data"):
        return _data_file(value, binary=True)
    if option == "data_urlencode":
        return urlencoded(value)
    return value.encode()  # --data-raw


def join(pieces: list[tuple[str, str]]) -> Body | None:
    """The body from (option, value) pairs in typed order; None when there is none."""
    if not pieces:
        return None
    data = bytearray()
    warnings: list[str] = []
    for index, (option, value) in enumerate(pieces):
        if index and option != "json_data":
            data += b"&"
        try:
            data += piece(option, value)
        except Unreadable as unreadable:
            warnings.append(unreadable.warning)
    is_json = any(option == "json_data" for option, _ in pieces)
    return Body(bytes(data), is_json, tuple(warnings))


def with_query(url: str, data: bytes) -> str:
    """`-G`: the data appended to the URL's query (the URL has no fragment: curl sends none)."""
    if not data:
        return url
    return f"{url}{'&' if '?' in url else '?'}{data.decode('latin-1')}"
