"""Property-based fuzzing of the sidecar's door (issue 14, SPEC §2 "Bad header values").

In process over ASGI, a few hundred requests of any shape (tests/support/fuzz.py):
never a 500, never a traceback in the log, never a call to a host the request
did not name. `bench/fuzz.py` runs the same strategies for 10,000+ examples.
A short pass over raw sockets through real Hypercorn checks what its parser
lets through.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.app import Sidecar
from sidecar.security.egress import EgressPolicy
from tests.conftest import make_settings
from tests.support.fuzz import Case, Harness, TracebackLog, cases
from tests.support.servers import serving
from tests.support.upstream import start_upstream

#: The CI share: enough to catch a regression in the door, well under 30 s in all.
CI_EXAMPLES = 300
#: Raw requests through Hypercorn: slower each, and its parser refuses most.
RAW_EXAMPLES = 60


def examples(count: int) -> settings:
    """Hypothesis settings for `count` examples: no deadline (a busy CI machine), the
    fixtures are module-scoped on purpose (one sidecar for all examples)."""
    return settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        # CI gets the same examples every run (a red CI lands nothing, so it
        # must not hinge on the draw); local runs and bench/fuzz.py explore.
        derandomize=os.environ.get("CI") == "true",
    )


@pytest.fixture(scope="module")
def harness() -> Iterator[tuple[asyncio.AbstractEventLoop, Harness]]:
    loop = asyncio.new_event_loop()
    fuzz = Harness()
    loop.run_until_complete(fuzz.start())
    try:
        yield loop, fuzz
    finally:
        loop.run_until_complete(fuzz.stop())
        loop.close()


@examples(CI_EXAMPLES)
@given(case=cases())
def test_no_input_gets_a_500_a_traceback_or_another_host(
    harness: tuple[asyncio.AbstractEventLoop, Harness], case: Case
) -> None:
    loop, fuzz = harness
    verdict = loop.run_until_complete(fuzz.run(case))
    assert verdict.problems == [], case


# --- a short raw-socket pass through real Hypercorn ---------------------------------

#: Request lines and headers an HTTP parser may or may not let through.
_LINES = [
    b"OPTIONS * HTTP/1.1",
    b"GET http://127.0.0.2:9/x HTTP/1.1",
    b"GET @127.0.0.2:9/echo HTTP/1.1",
    b"GET echo HTTP/1.1",
    b"CONNECT 127.0.0.2:9 HTTP/1.1",
    b"GET /caf\xc3\xa9 HTTP/1.1",
    b"GET /a\x00b HTTP/1.1",
    b"GET  / HTTP/1.1",
    b"GET / HTTP/9.9",
    b"G\xc3\x89T / HTTP/1.1",
    b"GET /?q=caf\xe9 HTTP/1.1",
    b"GET / HTTP/1.0",
]
_RAW_HEADERS = [
    b"User-Agent: na\xc3\xafve",
    b"Accept-Language: caf\xe9",
    b"X-Request-ID: r\xc3\xa9q-1",
    b"X-Identity-Key: cl\xc3\xa9",
    b"X-Target-URL: http://127.0.0.1 :9/",
    b"X-Target-URL: http://%31%32%37.0.0.1:9/",
    b"X-Target-URL: http://\xef\xbc\x91\xef\xbc\x92\xef\xbc\x97.0.0.1:9/",
    b"X-Failover-URL: http://127.0.0.1:9\t/x",
    b"X-Webhook-Callback: http://b\xc3\xbccher.example/",
    b"X-Custom: a\x01b",
    b"X Custom: 1",
    b": empty name",
    b"X-Folded: a\r\n b",
    b"Content-Length: 3\r\nTransfer-Encoding: chunked",
    b"Content-Length: -1",
    b"X-Retry-Count: \xef\xbc\x93",
]


async def _raw_exchange(address: tuple[str, int], request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(-1)
    finally:
        writer.close()


@pytest.fixture(scope="module")
def hypercorn() -> Iterator[tuple[asyncio.AbstractEventLoop, tuple[str, int], str, TracebackLog]]:
    """A sidecar behind real Hypercorn and a real upstream, on loopback, for the module."""
    loop = asyncio.new_event_loop()
    upstream, runner = loop.run_until_complete(start_upstream())
    data_dir = Path(tempfile.mkdtemp(prefix="mirapi-rawfuzz-"))
    app = Sidecar(make_settings(data_dir), egress=EgressPolicy(allow_private=True))
    served = serving(app)
    url = loop.run_until_complete(served.__aenter__())
    log = TracebackLog()
    logging.getLogger().addHandler(log)
    host, _, port = url.removeprefix("http://").rpartition(":")
    try:
        yield loop, (host, int(port)), upstream.url, log
    finally:
        logging.getLogger().removeHandler(log)
        loop.run_until_complete(served.__aexit__(None, None, None))
        loop.run_until_complete(runner.cleanup())
        loop.close()


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    """A request line and headers, each a known troublemaker or any bytes without CR/LF."""
    line = draw(
        st.one_of(
            st.sampled_from(_LINES),
            st.binary(max_size=30).map(
                lambda b: b"GET " + b.replace(b"\r", b"").replace(b"\n", b"") + b" HTTP/1.1"
            ),
        )
    )
    headers = draw(
        st.lists(
            st.one_of(
                st.sampled_from(_RAW_HEADERS),
                st.binary(max_size=30).map(
                    lambda b: b"X-Any: " + b.replace(b"\r", b"").replace(b"\n", b"")
                ),
            ),
            max_size=3,
        )
    )
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers)


@examples(RAW_EXAMPLES)
@given(head=raw_requests())
def test_raw_requests_through_hypercorn_never_get_a_500(
    hypercorn: tuple[asyncio.AbstractEventLoop, tuple[str, int], str, TracebackLog], head: bytes
) -> None:
    loop, address, upstream_url, log = hypercorn
    request = (
        head
        + b"Host: 127.0.0.1\r\n"
        + f"X-Target-URL: {upstream_url}\r\n".encode()
        + b"Connection: close\r\n\r\n"
    )
    before = len(log.tracebacks)
    raw = loop.run_until_complete(_raw_exchange(address, request))
    # Hypercorn answers what its parser refuses itself (400), or closes.
    if raw:
        status = int(raw.split(b" ", 2)[1])
        assert status != 500 and status < 600, raw[:300]
    assert log.tracebacks[before:] == []
