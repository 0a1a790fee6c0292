"""`-L`: following a redirect the way curl does, and the egress policy on each hop.

curl's rules: 301 and 302 turn a POST into a GET without its body, 303
turns anything but HEAD into a GET without a body, 307 and 308 keep the
method and the body. A method set with `-X` is kept on every hop, as curl
keeps it. Authorization and Cookie headers are not sent on to another
host (or port, or scheme).

The user typed the first URL, so it goes out with no egress policy (SPEC
§3). Every hop after it was chosen by the server, not the user: it goes
through the egress policy of the config (SPEC §9), with the typed host
allowed as `allow_hosts` would allow it (the user chose that host), so a
public API cannot redirect `mirapi curl` to cloud metadata or a private
address unless the config allows it (`allow_private`, `allow_hosts`).
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from mirapi_cli.commands.curl_model import CurlRequest

REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Not sent on to another origin.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of `url`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def location(headers: list[tuple[str, str]]) -> str | None:
    """The Location header's value, if the answer has one."""
    return next((value for name, value in headers if name.lower() == "location"), None)


def followed(follow: bool, status: int, target: str | None, route: str | None) -> bool:
    """True when `-L` follows this answer.

    Through a route (`--route`), only a Location path is followed (it stays
    on the route); a redirect to a full URL is shown as it came.
    """
    if not (follow and status in REDIRECTS and target):
        return False
    return route is None or "://" not in target


def next_method(status: int, method: str, custom: bool) -> tuple[str, bool]:
    """The method of the next hop and whether the body goes along."""
    if custom:
        return method, status in (307, 308)
    if status == 303 and method != "HEAD":
        return "GET", False
    if status in (301, 302) and method == "POST":
        return "GET", False
    return method, status in (307, 308)


def next_hop(call: CurlRequest, status: int, target: str, custom_method: bool) -> CurlRequest:
    """The request for the hop to `target` (the Location, maybe relative)."""
    url = urljoin(call.url, target).partition("#")[0]
    method, keep_body = next_method(status, call.method, custom_method)
    same_origin = origin(url) == origin(call.url)
    drop = frozenset() if same_origin else CREDENTIAL_HEADERS
    return call.retarget(url, method, call.body if keep_body else b"", drop)
