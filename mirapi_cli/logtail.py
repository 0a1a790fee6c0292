"""Reading the end of a log file, and following it as it grows (`tail -n`, `tail -F`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

_BLOCK = 64 * 1024


def last_lines(path: Path, count: int, *, since: int = 0) -> list[str]:
    """The last `count` lines of `path` (from byte `since` on), without newlines."""
    return [line.rstrip("\r\n") for line in _tail(path, count, since)[0]]


def _tail(path: Path, count: int, since: int = 0) -> tuple[list[str], int]:
    """The last `count` lines after byte `since` (newlines kept), and the size read up to."""
    try:
        with path.open("rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            start = end
            data = b""
            # Backwards in blocks: a long-lived log can be large, and only
            # its end is wanted.
            while start > since and data.count(b"\n") <= count:
                start = max(since, start - _BLOCK)
                handle.seek(start)
                data = handle.read(end - start)
    except FileNotFoundError:
        return [], 0
    lines = data.decode("utf-8", "replace").splitlines(keepends=True)
    return (lines[-count:] if count > 0 else []), end


def follow(path: Path, count: int, *, poll: float = 0.25) -> Iterator[str]:
    """The last `count` lines, then each line appended, for as long as the caller reads.

    A truncated file is read again from its start; a missing one is waited for.
    """
    lines, offset = _tail(path, count)
    if lines and not lines[-1].endswith("\n"):
        # A line still being written: it comes out once it is whole.
        offset -= len(lines.pop().encode())
    yield from lines
    pending = b""
    while True:
        chunk, offset = _read_from(path, offset)
        if chunk is None:
            pending = b""  # truncated or replaced: start over
        elif chunk:
            *complete, pending = (pending + chunk).split(b"\n")
            for line in complete:
                yield line.decode("utf-8", "replace") + "\n"
        else:
            time.sleep(poll)


def _read_from(path: Path, offset: int) -> tuple[bytes | None, int]:
    """What was appended after `offset`, and the new offset; None if the file shrank."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    if size < offset:
        return None, 0
    if size == offset:
        return b"", offset
    with path.open("rb") as handle:
        handle.seek(offset)
        chunk = handle.read(size - offset)
    return chunk, offset + len(chunk)
