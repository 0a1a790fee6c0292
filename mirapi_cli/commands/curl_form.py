"""curl's `-F`: a multipart/form-data body, built byte for byte as curl builds it.

`name=value` is a text field, `name=@file` a file upload (filename and a
content type guessed from the extension, as curl's short table does),
`name=<file` a text field read from a file; `;type=TYPE` and
`;filename=NAME` after the value set those. The boundary has curl's shape
(24 dashes and 16 hex digits), new for every call.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from mirapi_cli.commands.curl_data import read_source

#: curl's own extension table (lib/mime.c); anything else is octet-stream.
_CONTENT_TYPES = {
    ".gif": "image/gif",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
    ".htm": "text/html",
    ".html": "text/html",
    ".pdf": "application/pdf",
    ".xml": "application/xml",
}
_PARAMETERS = ("type", "filename", "headers", "encoder")


@dataclass(frozen=True)
class Part:
    """One form field."""

    name: str
    content: bytes
    filename: str | None = None
    content_type: str | None = None


def parse_field(spec: str) -> Part:
    """One `-F` value as a part; raises ValueError for one without `name=`."""
    name, equals, rest = spec.partition("=")
    if not equals:
        raise ValueError(f"-F {spec!r}: write a field as 'name=value' or 'name=@file'")
    value, parameters = _split_parameters(rest)
    if value.startswith("@"):
        path = value[1:]
        filename = parameters.get("filename", Path(path).name if path != "-" else "-")
        guessed = _CONTENT_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")
        return Part(name, read_source(path), filename, parameters.get("type", guessed))
    content = read_source(value[1:]) if value.startswith("<") else value.encode()
    return Part(name, content, parameters.get("filename"), parameters.get("type"))


def _split_parameters(text: str) -> tuple[str, dict[str, str]]:
    """The value before `;type=`/`;filename=`, and those parameters."""
    pieces = text.split(";")
    value = pieces[0]
    parameters: dict[str, str] = {}
    for extra in pieces[1:]:
        key, equals, setting = extra.strip().partition("=")
        if equals and key.lower() in _PARAMETERS:
            parameters[key.lower()] = setting.strip('"')
        elif not parameters:
            value += ";" + extra  # a ';' that is part of the value
    return value, parameters


def new_boundary() -> str:
    """A boundary of curl's shape."""
    return "-" * 24 + secrets.token_hex(8)


def _quoted(text: str) -> str:
    # curl escapes these in names and filenames as percent codes.
    return text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def encode(parts: list[Part], boundary: str) -> bytes:
    """The multipart body, framed as curl frames it."""
    body = bytearray()
    for part in parts:
        disposition = f'Content-Disposition: form-data; name="{_quoted(part.name)}"'
        if part.filename is not None:
            disposition += f'; filename="{_quoted(part.filename)}"'
        body += f"--{boundary}\r\n{disposition}\r\n".encode()
        if part.content_type is not None:
            body += f"Content-Type: {part.content_type}\r\n".encode()
        body += b"\r\n" + part.content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body)


def form_body(fields: list[str]) -> tuple[bytes, str]:
    """The body and its Content-Type for the `-F` values, in order."""
    boundary = new_boundary()
    parts = [parse_field(spec) for spec in fields]
    return encode(parts, boundary), f"multipart/form-data; boundary={boundary}"
