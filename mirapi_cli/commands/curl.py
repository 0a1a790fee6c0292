"""`mirapi curl`: a resilient one-off call, curl's everyday flags plus MirApi's.

curl's flags mean what they mean to curl (docs/curl.md; the test suite
runs the real curl beside it and compares what the upstream receives).
In-process by default (the same pipeline as the sidecar, no sidecar needed,
no egress policy for the URL the user typed; each `-L` hop goes through
the config's policy, with the typed host allowed), or through a running sidecar with
`--via`. With `--route NAME` the URL argument is the path and query to
append to the stored route's endpoints. The body goes to stdout (or `-o`);
notes, `-v` lines and the retry spinner go to stderr. Exit codes follow
curl's where curl has one, else MirApi's (1, 2).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated
from urllib.parse import unquote, urlsplit

import typer

from mirapi_cli.commands import curl_flags
from mirapi_cli.commands.curl_argv import typed_in_order
from mirapi_cli.commands.curl_data import DATA_OPTIONS, read_data
from mirapi_cli.commands.curl_model import CurlExit, CurlRequest, Transfer
from mirapi_cli.commands.curl_request import RequestFlags, build_request, route_path
from mirapi_cli.errors import CliError, ExitCode

if TYPE_CHECKING:
    from sidecar.config import Settings
    from sidecar.security.egress import Egress

__all__ = ["CurlExit", "CurlRequest", "curl", "parse_header", "read_data", "route_path"]
__all__ += ["run_call", "via_address"]


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value` as curl's -H takes it (`mirapi replay`)."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or " " in name.strip():
        raise CliError(f"-H {text!r}: write a header as 'Name: value'", ExitCode.USAGE)
    return name.strip(), value.strip()


def curl(
    context: typer.Context,
    url: Annotated[str, typer.Argument(help="The URL to call (with --route: the path to append).")],
    request: curl_flags.Request = None,
    header: curl_flags.Header = [],  # noqa: B006
    data: curl_flags.Data = [],  # noqa: B006
    data_raw: curl_flags.DataRaw = [],  # noqa: B006
    data_binary: curl_flags.DataBinary = [],  # noqa: B006
    data_urlencode: curl_flags.DataUrlencode = [],  # noqa: B006
    json_data: curl_flags.JsonData = [],  # noqa: B006
    form: curl_flags.Form = [],  # noqa: B006
    get: curl_flags.Get = False,
    head: curl_flags.Head = False,
    include: curl_flags.Include = False,
    user: curl_flags.User = None,
    user_agent: curl_flags.UserAgent = None,
    referer: curl_flags.Referer = None,
    cookie: curl_flags.Cookie = None,
    location: curl_flags.Location = False,
    max_redirs: curl_flags.MaxRedirs = 50,
    max_time: curl_flags.MaxTime = None,
    connect_timeout: curl_flags.ConnectTimeout = None,
    output_file: curl_flags.OutputFile = None,
    remote_name: curl_flags.RemoteName = False,
    silent: curl_flags.Silent = False,
    show_error: curl_flags.ShowError = False,
    fail: curl_flags.Fail = False,
    fail_with_body: curl_flags.FailWithBody = False,
    write_out: curl_flags.WriteOut = None,
    insecure: curl_flags.Insecure = False,
    compressed: curl_flags.Compressed = False,
    verbose: curl_flags.Verbose = False,
    retry: curl_flags.Retry = None,
    webhook: curl_flags.Webhook = None,
    retry_delay: curl_flags.RetryDelay = None,
    retry_on: curl_flags.RetryOn = None,
    timeout: curl_flags.Timeout = None,
    deadline: curl_flags.Deadline = None,
    failover: curl_flags.Failover = [],  # noqa: B006
    route: curl_flags.Route = None,
    idempotency_key: curl_flags.IdempotencyKey = None,
    smart_cache: curl_flags.SmartCache = None,
    circuit_breaker: curl_flags.CircuitBreaker = False,
    redis: curl_flags.Redis = None,
    via: curl_flags.Via = None,
    data_dir: curl_flags.DataDir = None,
) -> None:
    """Make one resilient HTTP call, like curl (its everyday flags), with retries and failover."""
    pieces = [("data", v) for v in data] + [("data_raw", v) for v in data_raw]
    pieces += [("data_binary", v) for v in data_binary]
    pieces += [("data_urlencode", v) for v in data_urlencode] + [
        ("json_data", v) for v in json_data
    ]
    if max_time is not None and deadline is None:
        deadline = f"{max(1, round(max_time * 1000))}ms"
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
    flags = RequestFlags(
        url=url,
        method=request,
        headers=header,
        data=typed_in_order(context, set(DATA_OPTIONS), pieces),
        form=form,
        get=get,
        head=head,
        user=user,
        user_agent=user_agent,
        referer=referer,
        cookie=cookie,
        compressed=compressed,
        route=route,
        insecure=insecure,
        connect_timeout=connect_timeout,
    )
    call = build_request(flags, proxy_headers)
    if not silent:
        for warning in flags.warnings:
            typer.echo(f"mirapi: warning: {warning}", err=True)
    transfer = Transfer(
        include=include or head,
        verbose=verbose,
        silent=silent,
        show_error=show_error,
        fail=fail,
        fail_with_body=fail_with_body,
        write_out=None if write_out is None else _template(write_out),
        compressed=compressed,
        follow=location,
        max_redirs=max_redirs,
        max_time=max_time,
    )
    settings = _store_settings(call, via, data_dir, redis)
    if remote_name and output_file is None:
        output_file = _remote_name(call.url)
    sink = _open_sink(output_file)
    from mirapi_cli.commands import curl_io, curl_transfer

    def hop_policy(typed_host: str) -> Egress:
        from mirapi_cli.options import load_settings

        return curl_io.policy_egress(settings or load_settings(data_dir, None), typed_host)

    try:
        code = asyncio.run(
            curl_transfer.perform(
                call,
                sink,
                transfer,
                via=via_address(via, data_dir),
                settings=settings,
                hop_policy=hop_policy,
                custom_method=request is not None,
            )
        )
    finally:
        if output_file is not None:
            sink.close()
    if code:
        raise typer.Exit(code)


def _template(value: str) -> str:
    from mirapi_cli.commands.curl_writeout import template_of

    return template_of(value)


def _remote_name(url: str) -> Path:
    """`-O`: the last segment of the URL's path, in the current directory."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or name in (".", ".."):
        raise CliError("-O: the URL has no file name to save as; use -o FILE", CurlExit.WRITE_ERROR)
    return Path(name)


def _open_sink(path: Path | None) -> IO[bytes]:
    if path is None or str(path) == "-":
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
    """Make `call` and write the answer (`mirapi replay`); `flag_names`: errors name flags."""
    from mirapi_cli.commands import curl_transfer

    transfer = Transfer(include=include, verbose=verbose, silent=silent, fail=fail)
    return await curl_transfer.perform(
        call, sink, transfer, via=via, settings=settings, flag_names=flag_names
    )
