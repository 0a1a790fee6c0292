"""What `mirapi curl` passes between its parts: the request, the output wishes, exit codes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum


class CurlExit(IntEnum):
    """curl's exit codes for the failures `mirapi curl` shares with it."""

    BAD_URL = 3
    RESOLVE = 6
    CONNECT = 7
    HTTP_ERROR = 22
    WRITE_ERROR = 23
    READ_ERROR = 26
    TIMEOUT = 28
    TOO_MANY_REDIRECTS = 47
    TLS_VERIFY = 60


#: The proxy header that names the target; redirects change it.
TARGET_HEADER = "X-Target-URL"


@dataclass
class CurlRequest:
    """What the flags asked for, as a method, headers and body."""

    url: str
    method: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    #: The stored route to call through; `url` is then the path and query.
    route: str | None = None
    #: `-k`: accept any TLS certificate.
    verify_tls: bool = True
    #: `--connect-timeout`, in seconds.
    connect_timeout: float | None = None

    def path_and_query(self) -> tuple[str, str]:
        """The path and the query (without '?') to append to a route's endpoints."""
        path, _, query = self.url.partition("?")
        return path or "/", query

    def retarget(self, url: str, method: str, body: bytes, drop: frozenset[str]) -> CurlRequest:
        """The same request to `url` (a redirect hop), without the headers named in `drop`."""
        body_headers = frozenset() if body else frozenset({"content-type"})
        headers = [
            (name, url if name == TARGET_HEADER else value)
            for name, value in self.headers
            if name.lower() not in drop | body_headers
        ]
        return replace(self, url=url, method=method, body=body, headers=headers)


@dataclass(frozen=True)
class Transfer:
    """How to run the call and show its answer: curl's output and transfer flags."""

    include: bool = False
    verbose: bool = False
    silent: bool = False
    #: `-S`: show errors even with `-s`.
    show_error: bool = False
    fail: bool = False
    fail_with_body: bool = False
    write_out: str | None = None
    compressed: bool = False
    follow: bool = False
    max_redirs: int = 50
    #: `-m`: the whole operation, in seconds.
    max_time: float | None = None

    @property
    def quiet_errors(self) -> bool:
        """True when an error message must not be printed (`-s` without `-S`)."""
        return self.silent and not self.show_error
