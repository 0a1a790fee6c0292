"""What the sidecar adds to an LLM stream's time to first token (SPEC §10: at most 1 ms).

Starts a fake OpenAI provider that streams Chat Completions chunks (first
content at once, then a few more) and a real sidecar process with an LLM
route to it (`--provider openai`), then times, request after request, from
sending the call to reading its first content delta: directly at the
provider and through the sidecar, interleaved. The sidecar holds a stream
until its first content (to fail over unseen), adds
`stream_options.include_usage`, watches every event and writes the closing
`: mirapi-llm` comment, so this is the whole cost of safe streams.

    python bench/llm.py                # 300 calls each way (and on a route with
                                       # no provider, to single out the LLM cost)
    python bench/llm.py --calls 1000
    python bench/llm.py --budget       # a budget on the route: every call reserved first

Loopback only; prints medians and p90s in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNKS = ["Hel", "lo", " there", "!"]
BODY = json.dumps(
    {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
).encode()


# -- the fake provider (run as a subprocess: `bench/llm.py --provider FD`) --------------


async def _provider(fd: int) -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        call = await request.json()
        usage = (call.get("stream_options") or {}).get("include_usage")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
        for piece in CHUNKS:
            delta = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            await response.write(b"data: " + json.dumps({**base, **delta}).encode() + b"\n\n")
        if usage:
            counts = {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}
            end = {**base, "choices": [], "usage": counts}
            await response.write(b"data: " + json.dumps(end).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, socket.socket(fileno=fd))
    await site.start()
    await asyncio.Event().wait()


# -- the client: raw HTTP/1.1 on one kept-alive connection ---------------------------------


class Caller:
    """Sends the streamed call and times the first content delta."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self._address = (host, port)
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nAuthorization: Bearer placeholder\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def call(self) -> tuple[float, float]:
        """Seconds to the first content delta, and to the end of the stream."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(*self._address)
        assert self._reader is not None
        started = time.perf_counter()
        self._writer.write(self._head)
        seen = b""
        first: float | None = None
        while True:
            data = await self._reader.read(65536)
            if not data:
                raise RuntimeError("connection closed mid-answer")
            seen += data
            if first is None and b'"content": "Hel' in seen:
                first = time.perf_counter() - started
            if b"[DONE]" in seen and seen.endswith(b"0\r\n\r\n"):
                break
        assert first is not None
        return first, time.perf_counter() - started


def _mirapi(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [shutil.which("mirapi") or "mirapi", *args, "--data-dir", str(data_dir)]
    env = {**os.environ, "MIRAPI_ALLOW_PRIVATE": "true", "NO_COLOR": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, check=True)


async def measure(calls: int, budget: bool) -> dict[str, list[float]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    provider = subprocess.Popen(  # noqa: ASYNC220 - started once, before any timing
        [sys.executable, __file__, "--provider", str(listener.fileno())],
        pass_fds=(listener.fileno(),),
    )
    listener.close()
    tmp = Path(tempfile.mkdtemp(prefix="mirapi-bench-llm-"))
    try:
        _mirapi(
            "routes",
            "add",
            "chat",
            "--endpoint",
            f"http://127.0.0.1:{port}",
            "--provider",
            "openai",
            data_dir=tmp,
        )
        _mirapi("routes", "add", "plain", "--endpoint", f"http://127.0.0.1:{port}", data_dir=tmp)
        if budget:
            # A budget on the route: every call is reserved in the store first.
            _mirapi("llm", "budget", "set", "route:chat", "--usd-per-day", "100000", data_dir=tmp)
        _mirapi("sidecar", "start", "--listen", "127.0.0.1:0", "--allow-private", data_dir=tmp)
        state = json.loads((tmp / "sidecar.json").read_text())
        host, _, sidecar_port = str(state["address"]).removeprefix("http://").rpartition(":")
        direct = Caller("127.0.0.1", port, "/v1/chat/completions")
        via = Caller(host, int(sidecar_port), "/r/chat/v1/chat/completions")
        # The same stream through a route without a provider: proxied as any POST.
        plain = Caller(host, int(sidecar_port), "/r/plain/v1/chat/completions")
        callers = {"direct": direct, "sidecar": via, "no-llm": plain}
        for _ in range(30):  # warm every path (prices load, connections open)
            for caller in callers.values():
                await caller.call()
        times: dict[str, list[float]] = {}
        for _ in range(calls):
            for name, caller in callers.items():
                first, total = await caller.call()
                times.setdefault(f"{name} first", []).append(first)
                times.setdefault(f"{name} total", []).append(total)
        return times
    finally:
        subprocess.run(  # noqa: ASYNC221 - the bench is over
            [
                shutil.which("mirapi") or "mirapi",
                "sidecar",
                "stop",
                "--data-dir",
                str(tmp),
            ],
            capture_output=True,
        )
        provider.terminate()
        provider.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument(
        "--budget", action="store_true", help="put a budget on the LLM route (reserve every call)"
    )
    parser.add_argument("--provider", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.provider is not None:
        asyncio.run(_provider(args.provider))
        return 0
    times = asyncio.run(measure(args.calls, args.budget))
    print(f"{args.calls} streamed calls each way; first content and whole stream (ms)")
    print(f"{'':16}{'p50':>8}{'p90':>8}")
    for name, values in times.items():
        print(f"{name:16}{_ms(values, 0.5):8.3f}{_ms(values, 0.9):8.3f}")

    def p50(name: str) -> float:
        return statistics.median(times[name]) * 1000

    added = p50("sidecar first") - p50("direct first")
    print(f"added to the time to first token at p50: {added:.3f} ms (SPEC §10: at most 1 ms)")
    llm = p50("sidecar first") - p50("no-llm first")
    print(f"  of which the LLM handling (vs a route without a provider): {llm:.3f} ms")
    print(f"added to the whole stream at p50: {p50('sidecar total') - p50('direct total'):.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
