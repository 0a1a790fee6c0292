"""A fast, minimal HTTP/1.1 upstream for benchmarks (raw asyncio Protocol + uvloop).

Answers every request with ``200`` and a small JSON body, keeps connections
alive, handles pipelining and request bodies with ``Content-Length``. It is not a
general HTTP server: chunked request bodies are rejected with ``411`` and the
connection closed. ``bench/run.py`` uses it when nginx is not installed.

Usage::

    python bench/upstream.py --port 18080 [--host 127.0.0.1]

Prints ``READY <port>`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from typing import cast

BODY = b'{"ok":true,"service":"bench-upstream","items":[1,2,3]}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: bench-upstream\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n" + BODY
)
RESPONSE_CLOSE = RESPONSE.replace(b"Connection: keep-alive", b"Connection: close")
RESPONSE_411 = b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEADER = 64 * 1024


class UpstreamProtocol(asyncio.Protocol):
    """Parse just enough HTTP/1.1 to frame requests; answer each with RESPONSE."""

    __slots__ = ("_buf", "_skip", "_transport")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._skip = 0  # body bytes of the current request still to discard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return
            data = data[self._skip :]
            self._skip = 0
        buf = self._buf
        buf += data
        out: list[bytes] = []
        close = False
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER:
                    close = True
                break
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            length = 0
            if b"\r\ncontent-length:" in head:
                start = head.index(b"\r\ncontent-length:") + 17
                stop = head.find(b"\r\n", start)
                try:
                    length = int(head[start : stop if stop >= 0 else None])
                except ValueError:
                    out.append(RESPONSE_411)
                    close = True
                    break
            elif b"\r\ntransfer-encoding:" in head:
                out.append(RESPONSE_411)
                close = True
                break
            wants_close = b"\r\nconnection: close" in head or head.split(b"\r\n", 1)[0].endswith(
                b"http/1.0"
            )
            out.append(RESPONSE_CLOSE if wants_close else RESPONSE)
            if length:
                if len(buf) >= length:
                    del buf[:length]
                else:
                    self._skip = length - len(buf)
                    buf.clear()
            if wants_close:
                close = True
                break
        if out:
            transport.write(b"".join(out) if len(out) > 1 else out[0])
        if close:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        UpstreamProtocol, host, port, backlog=1024, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        print("uvloop not installed; using the default asyncio loop (slower)", file=sys.stderr)
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
