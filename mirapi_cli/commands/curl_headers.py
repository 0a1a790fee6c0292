"""The request headers curl's flags make, and how `-H` overrides them.

curl sends headers of its own (User-Agent, Accept, and those of `-u`,
`-A`, `-e`, `-b`, `--compressed`, a body's Content-Type). `-H 'Name:
value'` replaces an own header of that name (every `-H` of a name is
kept: repeated names go out repeated), `-H 'Name:'` removes it and sends
nothing, `-H 'Name;'` sends the header with an empty value, `-H @file`
reads one header a line. Our default User-Agent is `mirapi/VERSION`.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from mirapi_cli.commands.curl_data import read_source
from mirapi_cli.errors import CliError, ExitCode

Headers = list[tuple[str, str]]

#: What `--compressed` asks for: the encodings `curl_output` can decode.
ACCEPT_ENCODING = "deflate, gzip"


def header_rules(values: list[str]) -> list[tuple[str, str | None]]:
    """Each `-H` as (name, value); value None means "remove, send nothing"."""
    rules: list[tuple[str, str | None]] = []
    for text in values:
        if text.startswith("@"):
            lines = read_source(text[1:]).decode("latin-1").splitlines()
            rules.extend(header_rules([line for line in lines if line.strip()]))
            continue
        name, colon, value = text.partition(":")
        if not colon and text.rstrip().endswith(";"):
            name, value = text.rstrip()[:-1], ""
            rules.append((_name(name, text), value))
            continue
        if not colon:
            raise CliError(f"-H {text!r}: write a header as 'Name: value'", ExitCode.USAGE)
        value = value.strip()
        rules.append((_name(name, text), value or None))
    return rules


def _name(name: str, text: str) -> str:
    if not name.strip() or " " in name.strip():
        raise CliError(f"-H {text!r}: write a header as 'Name: value'", ExitCode.USAGE)
    return name.strip()


def merge(own: Headers, rules: list[tuple[str, str | None]]) -> Headers:
    """curl's own headers with `-H` applied: replaced, removed or added."""
    named = {name.lower() for name, _ in rules}
    kept = [(name, value) for name, value in own if name.lower() not in named]
    return kept + [(name, value) for name, value in rules if value is not None]


def basic_auth(user: str) -> tuple[str, str]:
    """`-u user:password` as an Authorization header; `-u user` asks for the password."""
    if ":" not in user:
        import typer

        password = typer.prompt(f"Enter host password for user '{user}'", hide_input=True)
        user = f"{user}:{password}"
    token = base64.b64encode(user.encode()).decode("ascii")
    return "Authorization", f"Basic {token}"


def split_userinfo(url: str) -> tuple[str, str | None]:
    """The URL without `user:password@`, and that `user:password` (curl sends it as -u)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urlunsplit(parts._replace(netloc=host))
    return clean, f"{unquote(user)}:{unquote(password)}"


def cookie_header(value: str, url: str) -> str | None:
    """`-b`: a `name=value[; ...]` string as it is, else a cookie file's matching cookies."""
    if "=" in value:
        return value
    try:
        text = Path(value).read_text(encoding="latin-1")
    except OSError:
        return None  # curl reads a missing cookie file as an empty one
    parts = urlsplit(url)
    pairs = [
        f"{fields[5]}={fields[6]}"
        for fields in (line.split("\t") for line in text.splitlines())
        if len(fields) == 7 and _cookie_matches(fields, parts)
    ]
    return "; ".join(pairs) or None


def _cookie_matches(fields: list[str], url: SplitResult) -> bool:
    """A Netscape cookie-file line (domain, subdomains, path, secure, expires, ...) for `url`."""
    domain, _, path, secure, expires = fields[:5]
    domain = domain.removeprefix("#HttpOnly_").lstrip(".").lower()
    host = (url.hostname or "").lower()
    if domain.startswith("#"):
        return False
    if host != domain and not host.endswith("." + domain):
        return False
    if not (url.path or "/").startswith(path):
        return False
    if secure.upper() == "TRUE" and url.scheme != "https":
        return False
    return not (expires.isdigit() and 0 < int(expires) < time.time())


def own_headers(
    *,
    user_agent: str | None,
    accept: str,
    auth: str | None,
    referer: str | None,
    cookie: str | None,
    compressed: bool,
) -> Headers:
    """curl's own headers for these flags, in curl's order."""
    from sidecar import __version__

    headers: Headers = []
    if auth is not None:
        headers.append(basic_auth(auth))
    if user_agent is None:
        headers.append(("User-Agent", f"mirapi/{__version__}"))
    elif user_agent:
        headers.append(("User-Agent", user_agent))
    headers.append(("Accept", accept))
    if referer:
        headers.append(("Referer", referer.removesuffix(";auto")))
    if cookie:
        headers.append(("Cookie", cookie))
    if compressed:
        headers.append(("Accept-Encoding", ACCEPT_ENCODING))
    return headers
