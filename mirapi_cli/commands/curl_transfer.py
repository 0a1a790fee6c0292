"""One `mirapi curl` transfer: the call, its redirects, the output, `-w`, the exit code.

`-m` bounds all of it (every hop and the body) and exits 28 like curl;
exit codes follow curl's where curl has one (3, 6, 7, 22, 23, 26, 28, 47, 60),
else MirApi's (1, 2). Errors are one `mirapi: ...` line on stderr unless
`-s` (without `-S`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from mirapi_cli.commands import curl_io, curl_output, curl_redirect, curl_writeout
from mirapi_cli.commands.curl_model import CurlExit, CurlRequest, Transfer
from mirapi_cli.errors import ExitCode

if TYPE_CHECKING:
    from sidecar.config import Settings
    from sidecar.security.egress import Egress

#: The sidecar's error codes, as the curl exit code a script expects.
_EXIT_FOR_ERROR = {
    "upstream_unreachable": CurlExit.CONNECT,
    "upstream_timeout": CurlExit.TIMEOUT,
    "deadline_exceeded": CurlExit.TIMEOUT,
    "bad_header": ExitCode.USAGE,
    "bad_request": CurlExit.BAD_URL,
}


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


def flag_names(message: str) -> str:
    """A sidecar message naming a proxy header, in the user's words (the flag)."""
    header, colon, rest = message.partition(":")
    return f"{_FLAG_FOR_HEADER[header]}:{rest}" if colon and header in _FLAG_FOR_HEADER else message


def exit_code(failure: curl_io.CallFailed) -> int:
    """curl's exit code for a call that got no answer."""
    # The pipeline has one code for "not reached"; curl tells these two apart by
    # their own codes, and the message is where the pipeline says which it was.
    if failure.code == "upstream_unreachable" and failure.message.startswith("could not resolve"):
        return CurlExit.RESOLVE
    if failure.code == "upstream_unreachable" and "CERTIFICATE_VERIFY_FAILED" in failure.message:
        return CurlExit.TLS_VERIFY
    return int(_EXIT_FOR_ERROR.get(failure.code, ExitCode.ERROR))


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

    def say(self, message: str) -> None:
        self.console.print(f"mirapi: {message}", markup=False, soft_wrap=True)

    def __enter__(self) -> Progress:
        if self.spinner is not None:
            self.spinner.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.spinner is not None:
            self.spinner.stop()


class Transferring:
    """The state of one transfer across its hops."""

    def __init__(
        self,
        transfer: Transfer,
        progress: Progress,
        *,
        via: str | None,
        settings: Settings | None,
        hop_policy: Callable[[str], Egress] | None,
        custom_method: bool,
        name_flags: bool,
    ) -> None:
        self.transfer = transfer
        self.progress = progress
        self.via = via
        self.settings = settings
        self.hop_policy = hop_policy
        self.custom_method = custom_method
        self.name_flags = name_flags

    async def fetch(self, call: CurlRequest, typed_host: str | None) -> curl_io.CurlResponse:
        """One hop; `typed_host` is None for the first (the URL as typed, no policy)."""
        if self.transfer.verbose:
            sys.stderr.write(f"> {call.method} {call.url}\n")
        if self.via is not None:
            return await curl_io.through_sidecar(call, self.via)
        egress = None
        if self.hop_policy is not None and typed_host is not None:
            egress = self.hop_policy(typed_host)
        return await curl_io.in_process(call, self.progress.attempt, self.settings, egress)

    async def run(self, call: CurlRequest, sink: IO[bytes], stats: curl_writeout.Stats) -> int:
        typed_host = curl_redirect.origin(call.url)[1]
        transfer = self.transfer
        while True:
            try:
                response = await self.fetch(call, typed_host if stats.num_redirects else None)
            except curl_io.CallFailed as failure:
                if not transfer.quiet_errors:
                    message = failure.message
                    self.progress.say(flag_names(message) if self.name_flags else message)
                return exit_code(failure)
            target = curl_redirect.location(response.headers)
            if not curl_redirect.followed(transfer.follow, response.status, target, call.route):
                return await curl_output.deliver(response, sink, transfer, stats)
            assert target is not None
            if transfer.include:
                sink.write(curl_output.head_block(response))
            await response.close()
            if stats.num_redirects >= transfer.max_redirs:
                if not transfer.quiet_errors:
                    self.progress.say(f"(47) maximum ({transfer.max_redirs}) redirects followed")
                return CurlExit.TOO_MANY_REDIRECTS
            call = curl_redirect.next_hop(call, response.status, target, self.custom_method)
            stats.num_redirects += 1
            stats.url_effective, stats.method = call.url, call.method


async def perform(
    call: CurlRequest,
    sink: IO[bytes],
    transfer: Transfer,
    *,
    via: str | None,
    settings: Settings | None = None,
    hop_policy: Callable[[str], Egress] | None = None,
    custom_method: bool = False,
    flag_names: bool = True,
) -> int:
    """Make `call` (following redirects with `-L`), write the answer and `-w`; the exit code."""
    stats = curl_writeout.Stats(url_effective=call.url, method=call.method)
    with Progress(transfer.verbose, transfer.silent) as progress:
        state = Transferring(
            transfer,
            progress,
            via=via,
            settings=settings,
            hop_policy=hop_policy,
            custom_method=custom_method,
            name_flags=flag_names,
        )
        try:
            async with asyncio.timeout(transfer.max_time):
                code = await state.run(call, sink, stats)
        except TimeoutError:
            if not transfer.quiet_errors:
                progress.say(f"(28) the operation timed out after {transfer.max_time:g}s (-m)")
            code = CurlExit.TIMEOUT
        stats.finished, stats.exitcode = time.monotonic(), code
        if transfer.write_out is not None:
            text, unknown = curl_writeout.render(transfer.write_out, stats)
            for name in unknown:
                progress.say(f"unknown --write-out variable: '{name}'")
            sys.stdout.buffer.write(text.encode())
            sys.stdout.buffer.flush()
    return code
