"""`mirapi curl`'s options as typer declares them: curl's everyday flags, then MirApi's.

One alias a flag keeps the command's signature readable; the meaning of
each flag is curl's (docs/curl.md), and its help is what `--help`, the
man page and the completions show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Request = Annotated[
    str | None, typer.Option("-X", "--request", metavar="METHOD", help="HTTP method.")
]
Header = Annotated[
    list[str],
    typer.Option(
        "-H",
        "--header",
        metavar="HEADER",
        help="'Name: value', 'Name:' removes, 'Name;' empty; repeatable.",
    ),
]
Data = Annotated[
    list[str],
    typer.Option(
        "-d",
        "--data",
        "--data-ascii",
        metavar="DATA",
        help="Body; repeated: joined with '&'; @file strips newlines.",
    ),
]
DataRaw = Annotated[
    list[str], typer.Option("--data-raw", metavar="DATA", help="As -d, '@' is not special.")
]
DataBinary = Annotated[
    list[str],
    typer.Option("--data-binary", metavar="DATA", help="Body bytes as they are; @file or @-."),
]
DataUrlencode = Annotated[
    list[str],
    typer.Option(
        "--data-urlencode",
        metavar="DATA",
        help="content, name=content, @file or name@file, URL-encoded.",
    ),
]
JsonData = Annotated[
    list[str],
    typer.Option("--json", metavar="JSON", help="JSON body (sets Content-Type and Accept); @file."),
]
Form = Annotated[
    list[str],
    typer.Option(
        "-F",
        "--form",
        metavar="NAME=VALUE",
        help="Multipart field: name=value, name=@file, ;type=.",
    ),
]
Get = Annotated[bool, typer.Option("-G", "--get", help="Send the data in the query, with GET.")]
Head = Annotated[bool, typer.Option("-I", "--head", help="HEAD; print the headers.")]
Include = Annotated[bool, typer.Option("-i", "--include", help="Print response headers too.")]
User = Annotated[
    str | None, typer.Option("-u", "--user", metavar="USER:PASSWORD", help="user:password (Basic).")
]
UserAgent = Annotated[
    str | None, typer.Option("-A", "--user-agent", metavar="NAME", help="User-Agent.")
]
Referer = Annotated[str | None, typer.Option("-e", "--referer", metavar="URL", help="Referer.")]
Cookie = Annotated[
    str | None,
    typer.Option("-b", "--cookie", metavar="DATA|FILE", help="'name=value; ...' or a cookie file."),
]
Location = Annotated[bool, typer.Option("-L", "--location", help="Follow redirects.")]
MaxRedirs = Annotated[
    int, typer.Option("--max-redirs", metavar="N", help="Redirects -L follows (exit 47 past).")
]
MaxTime = Annotated[
    float | None,
    typer.Option("-m", "--max-time", metavar="SECONDS", help="Seconds for the whole call."),
]
ConnectTimeout = Annotated[
    float | None, typer.Option("--connect-timeout", metavar="SECONDS", help="Seconds to connect.")
]
OutputFile = Annotated[
    Path | None, typer.Option("-o", "--output", metavar="FILE", help="Write the body to FILE.")
]
RemoteName = Annotated[
    bool, typer.Option("-O", "--remote-name", help="Write the body to the URL's file name.")
]
Silent = Annotated[bool, typer.Option("-s", "--silent", help="No progress or error notes.")]
ShowError = Annotated[bool, typer.Option("-S", "--show-error", help="With -s, still show errors.")]
Fail = Annotated[
    bool, typer.Option("-f", "--fail", help="Exit 22 on an HTTP error status, no body.")
]
FailWithBody = Annotated[
    bool, typer.Option("--fail-with-body", help="Exit 22 on an HTTP error, after the body.")
]
WriteOut = Annotated[
    str | None,
    typer.Option(
        "-w", "--write-out", metavar="FORMAT", help="Print this after the call: %{http_code}, ..."
    ),
]
Insecure = Annotated[bool, typer.Option("-k", "--insecure", help="Accept any TLS certificate.")]
Compressed = Annotated[
    bool, typer.Option("--compressed", help="Ask for gzip/deflate and decode it.")
]
Verbose = Annotated[
    bool, typer.Option("-v", "--verbose", help="Show each attempt and the headers on stderr.")
]
Retry = Annotated[int | None, typer.Option("--retry", metavar="N", help="Retries, 0-10.")]
Webhook = Annotated[
    str | None,
    typer.Option(
        "--webhook",
        metavar="URL",
        help="Run as a background job and POST the outcome here (needs --via).",
    ),
]
RetryDelay = Annotated[
    str | None, typer.Option("--retry-delay", metavar="DURATION", help="Backoff base: 200ms, 1s.")
]
RetryOn = Annotated[
    str | None,
    typer.Option(
        "--retry-on",
        metavar="CONDITIONS",
        help="5xx,gateway-error,429,connect-failure,reset,timeout,CODE",
    ),
]
Timeout = Annotated[
    str | None, typer.Option("--timeout", metavar="DURATION", help="Per attempt: 5s, 250ms.")
]
Deadline = Annotated[
    str | None, typer.Option("--deadline", metavar="DURATION", help="Whole call, retries included.")
]
Failover = Annotated[
    list[str], typer.Option("--failover", metavar="URL", help="Backup URL; repeatable.")
]
Route = Annotated[
    str | None,
    typer.Option(
        "--route", metavar="NAME", help="Call through stored route NAME; URL is the path."
    ),
]
IdempotencyKey = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key", metavar="KEY", help="Same key on every attempt; replayed for 24h."
    ),
]
SmartCache = Annotated[
    str | None,
    typer.Option("--smart-cache", metavar="TTL", help="Keep 2xx answers to rescue failures."),
]
CircuitBreaker = Annotated[
    bool, typer.Option("--circuit-breaker", help="Fail fast while the host keeps failing.")
]
Redis = Annotated[
    str | None,
    typer.Option("--redis", metavar="URL", help="Share state through Redis (env: MIRAPI_REDIS)."),
]
Via = Annotated[
    str | None,
    typer.Option(
        "--via",
        metavar="URL",
        help="Send through a sidecar at this URL ('running': the one on this data dir).",
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="MIRAPI_DATA_DIR",
        metavar="DIR",
        help="Where the running sidecar's state is.",
    ),
]
