"""`mirapi curl`: a resilient one-off call, curl's flags plus MirApi's.

In-process by default (the same pipeline as the sidecar, no sidecar needed,
no egress policy: the user typed the URL), or through a running sidecar with
`--via`. With `--route NAME` the call uses a stored route (`mirapi routes`):
the URL argument is then the path and query to append to the route's
endpoints (`mirapi curl --route stripe /v1/charges -d amount=100`); a full
URL is accepted too and only its path and query are used. In-process, the
route is read from the store the settings name (the data dir's, or Redis).
The body goes to stdout (or `-o FILE`) as it arrives; notes, `-v`
attempt lines and the retry spinner go to stderr. Exit codes follow curl's
where curl has one (6, 7, 22, 28, 3, 26, 23), else MirApi's (1, 2).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from mirapi_cli.errors import CliError, ExitCode

if TYPE_CHECKING:
    from sidecar.config import Settings


class CurlExit(IntEnum):
    """curl's exit codes for the failures `mirapi curl` shares with it."""

    BAD_URL = 3
    RESOLVE = 6
    CONNECT = 7
    HTTP_ERROR = 22
    WRITE_ERROR = 23
    READ_ERROR = 26
    TIMEOUT = 28


#: The sidecar's error codes, as the curl exit code a script expects.
_EXIT_FOR_ERROR = {
    "upstream_unreachable": CurlExit.CONNECT,
    "upstream_timeout": CurlExit.TIMEOUT,
    "deadline_exceeded": CurlExit.TIMEOUT,
    "bad_header": ExitCode.USAGE,
    "bad_request": CurlExit.BAD_URL,
}


@dataclass
class CurlRequest:
    """What the flags asked for, as a method, headers and body."""

    url: str
    method: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    #: The stored route to call through; `url` is then the path and query.
    route: str | None = None

    def path_and_query(self) -> tuple[str, str]:
        """The path and the query (without '?') to append to a route's endpoints."""
        path, _, query = self.url.partition("?")
        return path or "/", query


def read_data(value: str, *, binary: bool) -> bytes:
    """curl's `-d`/`--data-binary` value: text, `@file` or `@-` for stdin."""
    if not value.startswith("@"):
        return value.encode()
    source = value[1:]
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {source}: {error.strerror}", CurlExit.READ_ERROR) from None
    # curl -d strips carriage returns and newlines from a file; --data-binary keeps bytes.
    return data if binary else data.replace(b"\r", b"").replace(b"\n", b"")


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value` as curl's -H takes it."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or " " in name.strip():
        raise CliError(f"-H {text!r}: write a header as 'Name: value'", ExitCode.USAGE)
    return name.strip(), value.strip()


def route_path(url: str) -> str:
    """What `--route` appends: `/path?query` from a path or a full URL."""
    if "://" in url:
        parts = urlsplit(url)
        path = parts.path or "/"
        return f"{path}?{parts.query}" if parts.query else path
    return url if url.startswith("/") else f"/{url}"


def build_request(
    url: str,
    method: str | None,
    headers: list[str],
    data: str | None,
    data_binary: str | None,
    proxy_headers: dict[str, str | None],
    route: str | None = None,
) -> CurlRequest:
    """The request to make, with MirApi's flags turned into its headers."""
    if route is not None:
        url = route_path(url)
    elif "://" not in url:
        url = f"http://{url}"  # as curl does for a bare host
    body = b""
    given = [parse_header(h) for h in headers]
    if data is not None or data_binary is not None:
        body = read_data(
            data_binary if data_binary is not None else data or "", binary=data_binary is not None
        )
        if not any(name.lower() == "content-type" for name, _ in given):
            given.append(("Content-Type", "application/x-www-form-urlencoded"))
    chosen = method or ("POST" if data is not None or data_binary is not None else "GET")
    request = CurlRequest(url=url, method=chosen.upper(), headers=given, body=body, route=route)
    if route is None:
        request.headers.append(("X-Target-URL", url))
    else:
        request.headers.append(("X-Route-Key", route))
    request.headers.extend((name, value) for name, value in proxy_headers.items() if value)
    return request


class Progress:
    """`-v` attempt lines and, on a TTY, a spinner while retries wait."""

    def __init__(self, verbose: bool, silent: bool) -> None:
        from mirapi_cli import output

        self.verbose = verbose
        self.console = output.stderr()
        self.spinner = None
        if not silent and not verbose and sys.stderr.isatty():
            self.spinner = self.console.status("calling…", spinner="dots")

    def attempt(self, url: str, outcome: str, wait: float) -> None:
        note = f"attempt to {url}: {outcome}"
        if wait:
            note += f", retrying in {wait:.2f}s"
        if self.verbose:
            self.console.print(f"* {note}", markup=False)
        elif self.spinner is not None:
            self.spinner.update(note)

    def __enter__(self) -> Progress:
        if self.spinner is not None:
            self.spinner.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.spinner is not None:
            self.spinner.stop()


def curl(
    url: Annotated[str, typer.Argument(help="The URL to call (with --route: the path to append).")],
    request: Annotated[str | None, typer.Option("-X", "--request", help="HTTP method.")] = None,
    header: Annotated[
        list[str], typer.Option("-H", "--header", help="'Name: value'; repeatable.")
    ] = [],  # noqa: B006
    data: Annotated[
        str | None, typer.Option("-d", "--data", help="Body; @file or @- reads it.")
    ] = None,
    data_binary: Annotated[
        str | None, typer.Option("--data-binary", help="Body bytes as they are; @file or @-.")
    ] = None,
    include: Annotated[
        bool, typer.Option("-i", "--include", help="Print response headers too.")
    ] = False,
    output_file: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the body to FILE.")
    ] = None,
    silent: Annotated[
        bool, typer.Option("-s", "--silent", help="No progress or error notes.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Show each attempt on stderr.")
    ] = False,
    fail: Annotated[
        bool, typer.Option("-f", "--fail", help="Exit 22 on an HTTP error status.")
    ] = False,
    retry: Annotated[int | None, typer.Option("--retry", help="Retries, 0-10.")] = None,
    webhook: Annotated[
        str | None,
        typer.Option(
            "--webhook",
            metavar="URL",
            help="Run as a background job and POST the outcome here (needs --via).",
        ),
    ] = None,
    retry_delay: Annotated[
        str | None, typer.Option("--retry-delay", help="Backoff base: 200ms, 1s.")
    ] = None,
    retry_on: Annotated[
        str | None,
        typer.Option("--retry-on", help="5xx,gateway-error,429,connect-failure,reset,timeout,CODE"),
    ] = None,
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="Per attempt: 5s, 250ms.")
    ] = None,
    deadline: Annotated[
        str | None, typer.Option("--deadline", help="Whole call, retries included.")
    ] = None,
    failover: Annotated[list[str], typer.Option("--failover", help="Backup URL; repeatable.")] = [],  # noqa: B006
    route: Annotated[
        str | None,
        typer.Option(
            "--route", metavar="NAME", help="Call through stored route NAME; URL is the path."
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Same key on every attempt; replayed for 24h."),
    ] = None,
    smart_cache: Annotated[
        str | None,
        typer.Option("--smart-cache", metavar="TTL", help="Keep 2xx answers to rescue failures."),
    ] = None,
    circuit_breaker: Annotated[
        bool, typer.Option("--circuit-breaker", help="Fail fast while the host keeps failing.")
    ] = False,
    redis: Annotated[
        str | None,
        typer.Option(
            "--redis", metavar="URL", help="Share state through Redis (env: MIRAPI_REDIS)."
        ),
    ] = None,
    via: Annotated[
        str | None,
        typer.Option(
            "--via",
            help="Send through a sidecar at this URL ('running': the one on this data dir).",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", envvar="MIRAPI_DATA_DIR", help="Where the running sidecar's state is."
        ),
    ] = None,
) -> None:
    """Make one resilient HTTP call, like curl, with retries and failover."""
    proxy_headers = {
        "X-Retry-Count": None if retry is None else str(retry),
        "X-Retry-Delay": retry_delay,
        "X-Retry-On": retry_on,
        "X-Timeout": timeout,
        "X-Deadline": deadline,
        "X-Failover-URL": ",".join(failover) or None,
        "X-Proxy-Idempotency-Key": idempotency_key,
        "X-Smart-Cache": smart_cache,
        "X-Circuit-Breaker": "on" if circuit_breaker else None,
        "X-Webhook-Callback": webhook,
    }
    call = build_request(url, request, header, data, data_binary, proxy_headers, route)
    settings = _store_settings(call, via, data_dir, redis)
    sink = _open_sink(output_file)
    try:
        code = asyncio.run(
            run_call(
                call,
                sink,
                include=include,
                verbose=verbose,
                silent=silent,
                fail=fail,
                via=via_address(via, data_dir),
                settings=settings,
            )
        )
    finally:
        if output_file is not None:
            sink.close()
    if code:
        raise typer.Exit(code)


def _open_sink(path: Path | None) -> IO[bytes]:
    if path is None:
        return sys.stdout.buffer
    try:
        return path.open("wb")
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror}", CurlExit.WRITE_ERROR) from None


#: Headers whose stages keep state: a call using one opens the shared store.
_STATEFUL_HEADERS = frozenset({"x-smart-cache", "x-circuit-breaker", "x-proxy-idempotency-key"})


def _store_settings(
    call: CurlRequest, via: str | None, data_dir: Path | None, redis: str | None
) -> Settings | None:
    """The settings naming the store an in-process call shares, when it needs one.

    A plain call opens no store (it starts faster and touches no files); a
    call through a route needs one, since routes live there.
    """
    if via is not None:
        return None
    stateful = any(name.lower() in _STATEFUL_HEADERS for name, _ in call.headers)
    if call.route is None and redis is None and not stateful:
        return None
    from mirapi_cli.options import load_settings

    flags: dict[str, object] = {} if redis is None else {"redis": redis}
    return load_settings(data_dir, None, flags)


def via_address(via: str | None, data_dir: Path | None) -> str | None:
    """The sidecar to send through: `via` as given, or the running one's for 'running'."""
    if via is None or via != "running":
        return via
    from mirapi_cli import daemon
    from sidecar import paths

    state = daemon.inspect(data_dir or paths.data_dir()).state
    if state is None:
        raise CliError(
            "no sidecar is running on this data dir (start one: mirapi sidecar start)",
            ExitCode.NOT_RUNNING,
        )
    return state.address


async def run_call(
    call: CurlRequest,
    sink: IO[bytes],
    *,
    include: bool,
    verbose: bool,
    silent: bool,
    fail: bool,
    via: str | None,
    settings: Settings | None = None,
    flag_names: bool = True,
) -> int:
    """Make `call` and write the answer; `flag_names`: errors name curl's flags."""
    from mirapi_cli.commands import curl_io

    with Progress(verbose, silent) as progress:
        try:
            if via is not None:
                response = await curl_io.through_sidecar(call, via)
            else:
                response = await curl_io.in_process(call, progress.attempt, settings)
        except curl_io.CallFailed as failure:
            if not silent:
                message = _flag_names(failure.message) if flag_names else failure.message
                progress.console.print(f"mirapi: {message}", markup=False, soft_wrap=True)
            return int(_EXIT_FOR_ERROR.get(failure.code, ExitCode.ERROR))
    return await curl_io.deliver(
        response, sink, include=include, verbose=verbose, fail=fail, silent=silent
    )


#: The headers `mirapi curl` sets from its flags, for messages in the user's words.
_FLAG_FOR_HEADER = {
    "X-Retry-Count": "--retry",
    "X-Retry-Delay": "--retry-delay",
    "X-Retry-On": "--retry-on",
    "X-Timeout": "--timeout",
    "X-Deadline": "--deadline",
    "X-Failover-URL": "--failover",
    "X-Proxy-Idempotency-Key": "--idempotency-key",
    "X-Smart-Cache": "--smart-cache",
    "X-Circuit-Breaker": "--circuit-breaker",
    "X-Target-URL": "URL",
    "X-Route-Key": "--route",
    "X-Webhook-Callback": "--webhook",
}


def _flag_names(message: str) -> str:
    header, colon, rest = message.partition(":")
    return f"{_FLAG_FOR_HEADER[header]}:{rest}" if colon and header in _FLAG_FOR_HEADER else message
