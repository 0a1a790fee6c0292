"""From curl's flags to one `CurlRequest`: URL, method, headers and body as curl makes them.

The method: `-X` as typed; else HEAD for `-I`; POST when there is a body
(data or `-F`, and no `-G`); else GET. curl's refusals are kept: `-I` or
`-G` with a body flag that cannot go with it, `-d` with `-F` (exit 2). A
URL without a scheme is http://; `user:password@` in it is sent as `-u`;
its fragment is never sent. A URL curl would not take exits 3.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mirapi_cli.commands import curl_data, curl_form
from mirapi_cli.commands import curl_headers as own
from mirapi_cli.commands.curl_model import TARGET_HEADER, CurlExit, CurlRequest
from mirapi_cli.errors import CliError, ExitCode

FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"


@dataclass
class RequestFlags:
    """The flags that shape the request, as typed."""

    url: str
    method: str | None = None
    headers: list[str] = field(default_factory=list)
    #: (option, value) for each data flag, in typed order (`curl_data`).
    data: list[tuple[str, str]] = field(default_factory=list)
    form: list[str] = field(default_factory=list)
    get: bool = False
    head: bool = False
    user: str | None = None
    user_agent: str | None = None
    referer: str | None = None
    cookie: str | None = None
    compressed: bool = False
    route: str | None = None
    insecure: bool = False
    connect_timeout: float | None = None
    #: Set by `build_request`: curl's warnings (an unreadable data file).
    warnings: list[str] = field(default_factory=list)


def route_path(url: str) -> str:
    """What `--route` appends: `/path?query` from a path or a full URL."""
    if "://" in url:
        parts = urlsplit(url)
        path = parts.path or "/"
        return f"{path}?{parts.query}" if parts.query else path
    return url if url.startswith("/") else f"/{url}"


def target_url(url: str) -> tuple[str, str | None]:
    """The URL to call and the `user:password` it carried; CliError(3) for a bad URL."""
    if "://" not in url:
        url = f"http://{url}"  # as curl does for a bare host
    url = url.partition("#")[0]
    if any(char in string.whitespace or ord(char) < 32 for char in url):
        raise CliError("the URL has a space or a control character in it", CurlExit.BAD_URL)
    url, userinfo = own.split_userinfo(url)
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise CliError(f'protocol "{parts.scheme}" is not supported (http, https)', ExitCode.ERROR)
    try:
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise CliError("the URL's port is not a number from 0 to 65535", CurlExit.BAD_URL) from None
    if not parts.hostname:
        raise CliError("the URL has no host", CurlExit.BAD_URL)
    return url, userinfo


def _refuse_conflicts(flags: RequestFlags) -> None:
    if flags.form and flags.data:
        raise CliError("-F cannot be combined with -d and the other data flags", ExitCode.USAGE)
    if flags.head and (flags.form or (flags.data and not flags.get)):
        raise CliError("-I (HEAD) cannot send a body: drop -d/-F, or add -G", ExitCode.USAGE)
    if flags.get and flags.form:
        raise CliError("-G cannot send a -F form", ExitCode.USAGE)


def build_request(flags: RequestFlags, proxy_headers: dict[str, str | None]) -> CurlRequest:
    """The request to make, with MirApi's flags turned into its proxy headers."""
    _refuse_conflicts(flags)
    userinfo = None
    if flags.route is not None:
        url = route_path(flags.url)
    else:
        url, userinfo = target_url(flags.url)
    body = curl_data.join(flags.data)
    if body is not None:
        flags.warnings.extend(body.warnings)
    content = b""
    content_type: str | None = None
    if body is not None and flags.get:
        url = curl_data.with_query(url, body.data)
    elif body is not None:
        content, content_type = body.data, JSON_TYPE if body.is_json else FORM_TYPE
    elif flags.form:
        content, content_type = curl_form.form_body(flags.form)
    method = flags.method or (
        "HEAD" if flags.head else "POST" if content_type is not None else "GET"
    )
    headers = own.own_headers(
        user_agent=flags.user_agent,
        accept=JSON_TYPE if body is not None and body.is_json else "*/*",
        auth=flags.user if flags.user is not None else userinfo,
        referer=flags.referer,
        cookie=None if flags.cookie is None else own.cookie_header(flags.cookie, url),
        compressed=flags.compressed,
    )
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    headers = own.merge(headers, own.header_rules(flags.headers))
    if flags.route is None:
        headers.append((TARGET_HEADER, url))
    else:
        headers.append(("X-Route-Key", flags.route))
    headers.extend((name, value) for name, value in proxy_headers.items() if value)
    return CurlRequest(
        url=url,
        method=method,
        headers=headers,
        body=content,
        route=flags.route,
        verify_tls=not flags.insecure,
        connect_timeout=flags.connect_timeout,
    )
