"""Stored secrets (SPEC §6): a name, the host it is for, how to send it, and a token.

    Secret(name="stripe", host="api.stripe.com", header="Authorization",
           format="Bearer {}", token="mirapi:v1:...")

The store keeps them as JSON (kind "secrets", record name = the secret's
name) with the value only ever as a `mirapi:v1:` token (sidecar.security.vault),
whose associated data is the name. Everything else (name, host, header,
format) is not secret: `mirapi secrets list` shows it.

A secret is sent only to its own host (exact match, any port): its header
is `format` with `{}` replaced by the value. `parse_secret` validates a
definition and raises SecretError naming the field at fault, never a value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

from sidecar.headers import is_forwarded
from sidecar.routing.routes import NAME_PATTERN
from sidecar.security.vault import PREFIX

#: The store's record kind for secrets (record name = secret name).
KIND = "secrets"
DEFAULT_HEADER = "Authorization"
DEFAULT_FORMAT = "Bearer {}"
PLACEHOLDER = "{}"

#: RFC 9110 §5.6.2 token: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: DNS labels (underscores tolerated: internal names have them).
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
#: What may go into a header value as it is: printable ASCII, inner spaces and tabs.
_HEADER_SAFE = re.compile(r"[!-~]([ \t!-~]*[!-~])?")
#: A value longer than this is no API credential (and would not fit in a header).
MAX_VALUE_CHARS = 8 * 1024


class SecretError(ValueError):
    """A secret definition that cannot be used; the message names the field, never a value."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    """One stored secret: where it goes, how it is sent, and its token."""

    name: str
    #: The upstream hostname it is injected for, lower case, no port.
    host: str
    header: str = DEFAULT_HEADER
    #: The header's value, with `{}` standing for the secret.
    format: str = DEFAULT_FORMAT
    #: The value, encrypted (`mirapi:v1:...`, associated data = name).
    token: str = field(repr=False)

    def header_for(self, value: str) -> tuple[str, str]:
        """(lower-case header name, header value) carrying the decrypted `value`."""
        return self.header.lower(), self.format.replace(PLACEHOLDER, value, 1)


def parse_secret(
    name: str, host: str, token: str, header: str = DEFAULT_HEADER, format: str = DEFAULT_FORMAT
) -> Secret:
    """A validated Secret (the host normalised); SecretError naming the field otherwise."""
    check_name(name)
    if not token.startswith(PREFIX):
        raise SecretError(f"secret {name!r}: the stored value is not a {PREFIX} token")
    return Secret(
        name=name,
        host=normalize_host(host),
        header=check_header(header),
        format=check_format(format),
        token=token,
    )


def check_name(name: str) -> str:
    """A secret name: the same rule as route names (safe in a header, a key and a shell)."""
    if NAME_PATTERN.fullmatch(name) is None:
        raise SecretError(
            "bad secret name: use 1 to 64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def normalize_host(host: str) -> str:
    """`host` lower-cased, without a trailing dot or IPv6 brackets; SecretError if not a host."""
    text = host.strip().lower()
    if "://" in text or "/" in text:
        raise SecretError("--host: give the hostname only (api.stripe.com), no scheme or path")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        pass
    if ":" in text:
        raise SecretError("--host: no port; a secret is sent to its host on any port")
    text = text.removesuffix(".")
    labels = text.split(".")
    if not text or len(text) > 253 or any(_LABEL.fullmatch(label) is None for label in labels):
        raise SecretError(
            "--host: not a hostname (letters, digits and '-' between dots;"
            " an internationalised name in its xn-- form)"
        )
    return text


def check_header(header: str) -> str:
    """A header name the upstream may receive: not a proxy, hop-by-hop or framing header."""
    if _TOKEN.fullmatch(header) is None:
        raise SecretError("--header: not a valid HTTP header name")
    if not is_forwarded(header.lower()):
        raise SecretError(f"--header: {header} is never sent upstream (a proxy or hop header)")
    return header


def check_format(format: str) -> str:
    """A header value template with exactly one `{}`, printable ASCII."""
    if format.count(PLACEHOLDER) != 1:
        raise SecretError("--format: must contain {} exactly once (where the secret goes)")
    if _HEADER_SAFE.fullmatch(format) is None:
        raise SecretError("--format: use printable ASCII only, no line breaks")
    return format


def check_value(value: str) -> str:
    """A secret value fit for a header: printable ASCII, no line breaks (never echoed)."""
    if not value:
        raise SecretError("the secret value is empty")
    if len(value) > MAX_VALUE_CHARS:
        raise SecretError(f"the secret value is over {MAX_VALUE_CHARS} characters")
    if _HEADER_SAFE.fullmatch(value) is None:
        raise SecretError(
            "the secret value must be printable ASCII without line breaks or control characters"
        )
    return value


def target_host(url: str) -> str:
    """The hostname of an upstream URL as secrets name it ("" when there is none)."""
    try:
        hostname = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    try:
        return ipaddress.ip_address(hostname).compressed
    except ValueError:
        return hostname.removesuffix(".")


def for_host(secrets: Mapping[str, Secret], host: str) -> Secret | None:
    """The secret for `host`; with several, the first by name (a stable, visible rule)."""
    matching = sorted(name for name, secret in secrets.items() if secret.host == host)
    return secrets[matching[0]] if matching else None


def encode(secret: Secret) -> bytes:
    """The secret as stored: compact JSON, the value as its token only."""
    return orjson.dumps(
        {
            "name": secret.name,
            "host": secret.host,
            "header": secret.header,
            "format": secret.format,
            "token": secret.token,
        }
    )


def decode(name: str, data: bytes) -> Secret:
    """The inverse of `encode` for record `name`; ValueError on data that is not one.

    The stored name must be the record's: the token is bound to it.
    """
    raw = orjson.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("a stored secret is a JSON object")
    secret = parse_secret(
        str(raw["name"]),
        str(raw["host"]),
        str(raw["token"]),
        header=str(raw.get("header", DEFAULT_HEADER)),
        format=str(raw.get("format", DEFAULT_FORMAT)),
    )
    if secret.name != name:
        raise ValueError("the secret is stored under another name")
    return secret
