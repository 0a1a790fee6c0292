"""Who may read the dashboard, and the headers every page and feed carries (SPEC §12).

The door is the proxy's (`sidecar.security.gate.Gate`): Host check, then loopback
only while no client key exists, else `X-MirApi-Key`. The one difference:
once keys exist, the HTML shells and their static files load without a key
(`is_public_path`), so a browser can show the page that asks for one. They
hold nothing private: every number on the page comes from a JSON feed under
`FEED_PREFIX`, which always needs the key, and the key the page asks for is
kept in the tab's sessionStorage and sent as `X-MirApi-Key`.

The feeds also refuse to be read across sites (`cross_site`): no
`Access-Control-Allow-Origin` is ever sent, so a browser already keeps a
foreign page from reading them, and a request a browser marks as coming
from another origin (`Sec-Fetch-Site`, `Origin`) is refused outright
before anything is read from the store.
"""

from __future__ import annotations

from collections.abc import Mapping

UI_PATH = "/_mirapi/ui"
STATIC_PREFIX = UI_PATH + "/static/"
RECORD_PREFIX = UI_PATH + "/requests/"
FEED_PREFIX = UI_PATH + "/feed/"

#: No inline script or style, nothing from elsewhere, no framing, no forms.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: On every dashboard answer, page, asset or feed.
COMMON_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}
#: What a browser may say a same-origin request is (`none`: typed in the address bar).
_SAME_ORIGIN = frozenset({"same-origin", "none"})


def is_public_path(path: str) -> bool:
    """Whether `path` is a dashboard shell or asset, which loads without a client key.

    An allow-list: the page, a record's page, and files under static/; never
    a feed, and nothing with a `..` segment that could lead elsewhere.
    """
    if path in (UI_PATH, UI_PATH + "/"):
        return True
    if "/.." in path or "\\" in path:
        return False
    return path.startswith((STATIC_PREFIX, RECORD_PREFIX))


def cross_site(headers: Mapping[str, str]) -> str | None:
    """Why a feed request came from another origin, or None when it did not.

    `headers` has lower-case names. `Sec-Fetch-Site` (every current browser
    sends it) must be same-origin; an `Origin`, when sent, must name the
    host the request was sent to. Neither header: not a browser's
    cross-origin read (curl, a script), which the client key governs.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in _SAME_ORIGIN:
        return f"Sec-Fetch-Site is {site!r}: the dashboard's feeds are same-origin only"
    origin = headers.get("origin")
    if origin is not None:
        host = headers.get("host", "")
        if origin.partition("://")[2].lower() != host.lower() or not host:
            return "the Origin is not this sidecar: the dashboard's feeds are same-origin only"
    return None
