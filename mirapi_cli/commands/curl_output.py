"""Writing an answer as curl does: `-i`/`-I` headers, the body, `-f`, `--compressed`.

Header names are shown lower-case (the pipeline keeps them so, as HTTP/2
does); the status line is `HTTP/1.1 CODE REASON`. `-f` writes nothing for a
status of 400 or more (but the `-i` headers) and exits 22; `--fail-with-body` writes the body,
then exits 22. `--compressed` decodes a gzip or deflate body (`-w
%{size_download}` still counts the bytes that came over the wire).
"""

from __future__ import annotations

import sys
import zlib
from typing import IO, TYPE_CHECKING

from mirapi_cli.commands.curl_model import CurlExit, Transfer
from mirapi_cli.errors import ExitCode

if TYPE_CHECKING:
    from mirapi_cli.commands.curl_io import CurlResponse
    from mirapi_cli.commands.curl_writeout import Stats


def head_lines(response: CurlResponse) -> list[str]:
    """The status line and the header lines, as `-i` prints them."""
    status_line = f"HTTP/1.1 {response.status} {response.reason}".rstrip()
    return [status_line, *(f"{name}: {value}" for name, value in response.headers)]


def head_block(response: CurlResponse) -> bytes:
    """The headers as `-i` writes them to the output: CRLF lines and a blank line."""
    return ("\r\n".join(head_lines(response)) + "\r\n\r\n").encode("latin-1")


class _Decoder:
    """Undoes a gzip or deflate Content-Encoding chunk by chunk; anything else passes."""

    def __init__(self, encoding: str) -> None:
        self._zlib: zlib._Decompress | None = None
        self._raw_fallback = False
        if encoding == "gzip":
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            # "deflate" is zlib-wrapped by the RFC, raw by some servers; curl takes both.
            self._zlib = zlib.decompressobj()
            self._raw_fallback = True

    def feed(self, chunk: bytes) -> bytes:
        if self._zlib is None:
            return chunk
        try:
            return self._zlib.decompress(chunk)
        except zlib.error:
            if not self._raw_fallback:
                raise
            self._raw_fallback = False
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._zlib.decompress(chunk)

    def flush(self) -> bytes:
        return b"" if self._zlib is None else self._zlib.flush()


def _encoding(response: CurlResponse) -> str:
    values = [v for n, v in response.headers if n.lower() == "content-encoding"]
    return values[-1].strip().lower() if values else ""


async def deliver(response: CurlResponse, sink: IO[bytes], transfer: Transfer, stats: Stats) -> int:
    """Write the answer as the flags ask; return the exit code."""
    stats.http_code = response.status
    stats.headers = list(response.headers)
    stats.size_header = len(head_block(response))
    if transfer.verbose:
        sys.stderr.write("".join(f"< {line}\n" for line in head_lines(response)) + "<\n")
    failed = response.status >= 400 and (transfer.fail or transfer.fail_with_body)
    if failed and not transfer.quiet_errors:
        sys.stderr.write(f"mirapi: (22) the requested URL returned error: {response.status}\n")
    if failed and not transfer.fail_with_body:
        # curl has written the headers (-i) by the time it looks at the status.
        try:
            if transfer.include:
                sink.write(head_block(response))
                sink.flush()
        except OSError:
            pass  # exit 22 says more than the write error would
        finally:
            await response.close()
        return CurlExit.HTTP_ERROR
    decoder = _Decoder(_encoding(response) if transfer.compressed else "")
    try:
        if transfer.include:
            sink.write(head_block(response))
        async for chunk in response.chunks:
            stats.size_download += len(chunk)
            sink.write(decoder.feed(chunk))
            sink.flush()
        sink.write(decoder.flush())
        sink.flush()
    except BrokenPipeError:
        return ExitCode.OK
    except zlib.error:
        if not transfer.quiet_errors:
            sys.stderr.write("mirapi: (61) the body could not be decoded (--compressed)\n")
        return 61
    except OSError:
        return CurlExit.WRITE_ERROR
    finally:
        await response.close()
    return CurlExit.HTTP_ERROR if failed else ExitCode.OK
