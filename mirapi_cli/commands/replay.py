"""`mirapi replay REQUEST_ID`: send a recorded request again, through the sidecar (SPEC §8, §9).

The record is read from the store the sidecar uses (the data dir's SQLite,
or Redis with `--redis`), rebuilt into a request (method, headers, body,
and `X-Target-URL` or, for a route, `X-Route-Key` and the path) and sent
through the running sidecar, so the replay gets the full pipeline (retries,
cache, secrets) like the original. The answer is printed as `mirapi curl`
prints it: the body on stdout, `-i` / `-v` for the head; the sending and
printing are curl's own (`curl.run_call`).

On top of the record: `-H 'Name: value'` replaces every recorded header of
that name (`-H 'Name:'` removes it), `-X` the method, `--target URL` the
upstream (X-Target-URL; for a route record, the route), `--data` the body.

A record holds no credentials (`sidecar.observability.recorder`), so the user adds them
with `-H`; a note on stderr names each one the original carried, and says
so when the query was not recorded (recording off) and is not sent. A
POST, PUT or PATCH whose body was not recorded is refused (exit 2) unless
`--data` gives one: sent empty it would be another request (a charge of
nothing). `--show` prints the record instead of sending it.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mirapi_cli.commands.curl import CurlRequest, parse_header, read_data, run_call, via_address
from mirapi_cli.errors import CliError, ExitCode
from mirapi_cli.options import ConfigOption, DataDirOption, JsonOption
from mirapi_cli.store_access import with_store

if TYPE_CHECKING:
    from rich.console import RenderableType

    from sidecar.observability.recorder import RequestRecord
    from sidecar.store.logs import LogReader


def replay(
    request_id: Annotated[
        str, typer.Argument(metavar="REQUEST_ID", help="The request's X-Request-ID.")
    ],
    header: Annotated[
        list[str],
        typer.Option("-H", "--header", help="'Name: value' replaces the recorded one; repeatable."),
    ] = [],  # noqa: B006
    request: Annotated[
        str | None, typer.Option("-X", "--request", help="Another HTTP method.")
    ] = None,
    target: Annotated[
        str | None,
        typer.Option("--target", metavar="URL", help="Send to this URL instead (X-Target-URL)."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", metavar="DATA", help="Another body, as is; @file or @- reads it."),
    ] = None,
    include: Annotated[
        bool, typer.Option("-i", "--include", help="Print response headers too.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Show the request and response head.")
    ] = False,
    via: Annotated[
        str,
        typer.Option(
            "--via", help="The sidecar to send through ('running': the one on this data dir)."
        ),
    ] = "running",
    show: Annotated[
        bool, typer.Option("--show", help="Print the record instead of sending it.")
    ] = False,
    as_json: JsonOption = False,
    redis: Annotated[
        str | None,
        typer.Option(
            "--redis", metavar="URL", help="Records shared through Redis (env: MIRAPI_REDIS)."
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Send a recorded request again, with other headers, through the sidecar."""
    if as_json and not show:
        raise CliError(
            "--json goes with --show (a replay prints the response body)", ExitCode.USAGE
        )
    given = [parse_header(text) for text in header]
    if target is not None and not target.startswith(("http://", "https://")):
        raise CliError("--target: give an absolute http:// or https:// URL", ExitCode.USAGE)
    record = load(request_id, data_dir, config, redis)
    if show:
        _show(record, as_json)
        return
    body = None if data is None else read_data(data, binary=True)
    call, notes = rebuild(record, given, method=request, target=target, body=body)
    from mirapi_cli import output

    for note in notes:
        output.note(f"mirapi: {note}")
    if verbose:
        where = f"route {call.route} {call.url}" if call.route else call.url
        output.note(f"* replaying {record.request_id}: {call.method} {where}")
    code = asyncio.run(
        run_call(
            call,
            sys.stdout.buffer,
            include=include,
            verbose=verbose,
            silent=False,
            fail=False,
            via=via_address(via, data_dir),
            flag_names=False,
        )
    )
    if code:
        raise typer.Exit(code)


#: How long a missing record is waited for (records are written every 0.25 s).
RECORD_PATIENCE = 1.0
RECORD_PATIENCE_STEPS = 10


def load(
    request_id: str, data_dir: Path | None, config: Path | None, redis: str | None
) -> RequestRecord:
    """The record of `request_id` from the store; CliError when there is none."""
    from sidecar.observability.recorder import decode
    from sidecar.store.base import REQUESTS_MAX

    async def get(store: LogReader) -> bytes | None:
        # A sidecar writes its records in batches, every quarter second: a
        # call made a moment ago may not be there yet, so a miss is looked
        # up again for a second before it is an error.
        found = await store.request_get(request_id)
        for _ in range(RECORD_PATIENCE_STEPS):
            if found is not None:
                break
            await asyncio.sleep(RECORD_PATIENCE / RECORD_PATIENCE_STEPS)
            found = await store.request_get(request_id)
        return found

    data = with_store(data_dir, config, redis, get)
    if data is None:
        raise CliError(
            f"no request record {request_id!r}: unknown id, or older than the newest"
            f" {REQUESTS_MAX:,} requests"
        )
    try:
        return decode(data)
    except ValueError as error:
        raise CliError(f"the record of {request_id!r} cannot be read ({error})") from None


#: Why a body the original had is not in the record, by `withheld` entry.
_NO_BODY = {
    "body": "recording was off for it",
    "body_too_large": "it was over 1 MiB",
    "card_number": "it or the query held a card number",
}
#: Methods whose body is the request: never replayed without it (SPEC §9).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_URL_NOTES = {
    "query": "the record has no query string (recording was off for it): sending the URL"
    " without it; give the whole URL with --target",
    "userinfo": "the URL's user:password was not recorded: give the whole URL with --target",
}
_CARD_NOTE = "its body and query were not recorded (they held a card number)"


def rebuild(
    record: RequestRecord,
    given: list[tuple[str, str]],
    *,
    method: str | None = None,
    target: str | None = None,
    body: bytes | None = None,
) -> tuple[CurlRequest, list[str]]:
    """The request to send for `record` with the user's changes, and notes for stderr."""
    notes: list[str] = []
    route = record.route
    url = record.url
    if target is not None:
        route, url = None, target
    elif route is None and "://" not in url:
        raise CliError(
            f"request {record.request_id!r} named no upstream: give one with --target URL"
        )
    method = (method or record.method).upper()
    missing = missing_body(record)
    if missing is not None and body is None:
        if method in _BODY_METHODS:
            raise CliError(
                f"request {record.request_id!r} is a {method} whose body was not recorded"
                f" ({missing}): sent without it, it would be another request. Give the body"
                " with --data (--data @file, or --data '' to send none)",
                ExitCode.USAGE,
            )
        notes.append(f"the body was not recorded ({missing}): sending none; give one with --data")
    given_names = {name.lower() for name, _ in given}
    for item in record.withheld:
        kind, _, name = item.partition(":")
        if item == "card_number":
            notes.append(_CARD_NOTE)
        elif item in _URL_NOTES and target is None:
            notes.append(_URL_NOTES[item])
        elif kind == "param" and target is None:
            notes.append(
                f"query parameter {name} was not recorded (a credential): sending the URL"
                " without it; give the whole URL with --target"
            )
        elif kind == "header" and name not in given_names:
            notes.append(f"{name} was not recorded (a credential): add it with -H '{name}: ...'")
    headers = [(name, value) for name, value in record.headers if name.lower() not in given_names]
    headers.append(("X-Route-Key", route) if route is not None else ("X-Target-URL", url))
    # `-H 'Name:'` removes the header, as curl's does.
    headers.extend((name, value) for name, value in given if value)
    if body is not None and not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))  # as curl -d
    call = CurlRequest(
        url=url,
        method=method,
        headers=headers,
        body=(record.body or b"") if body is None else body,
        route=route,
    )
    return call, notes


def missing_body(record: RequestRecord) -> str | None:
    """Why the original's body is not in `record`; None when it is (or there was none)."""
    if record.body is not None:
        return None
    # The recorder notes a withheld body only when there was one: a record
    # without a body and without such a note was a request without a body.
    return next((_NO_BODY[item] for item in record.withheld if item in _NO_BODY), None)


def _show(record: RequestRecord, as_json: bool) -> None:
    from mirapi_cli import output
    from sidecar.observability.recorder import public_view

    def human() -> RenderableType:
        when = datetime.fromtimestamp(record.time, UTC).isoformat(timespec="seconds")
        missing = missing_body(record)
        if record.body is not None:
            body = f"{len(record.body)} bytes"
        elif missing is None:
            body = "none"
        elif record.method.upper() in _BODY_METHODS:
            body = f"not recorded ({missing}): a replay needs --data"
        else:
            body = f"not recorded ({missing})"
        rows: dict[str, object] = {
            "request id": record.request_id,
            "time": when,
            "method": record.method,
            "route": record.route or "none",
            "url": record.url,
            "status": record.status,
            "rescue": record.rescue or "none",
            "headers": "\n".join(f"{name}: {value}" for name, value in record.headers) or "none",
            "body": body,
            "not recorded": ", ".join(record.withheld) or "nothing",
        }
        return output.key_value_table(rows)

    output.emit(public_view(record), as_json=as_json, human=human)
