"""Fuzzing the sidecar's door in process: strategies, spies and the property (issue 14).

Shared by `tests/sidecar/test_fuzz.py` (a few hundred examples in CI) and
`bench/fuzz.py` (tens of thousands), so both draw the very same requests.

A case is one HTTP request as an ASGI server could hand it over: any
method, any request-target bytes, any header names and values (bytes), the
sidecar's control headers with valid-looking and garbage values, and a body
in any framing (chunks, a Content-Length that lies, Transfer-Encoding, a
client that goes away). The property, checked by `Harness.run`:

- never a `500` from the sidecar,
- never a traceback in the log,
- never a call to a host the request did not name: every host the egress
  policy is asked about and every URL the upstream transport is handed must
  appear in a URL the requests named (X-Target-URL, X-Failover-URL,
  X-Webhook-Callback, the stored route's endpoints). No strategy names
  127.0.0.2, but request-targets such as `@127.0.0.2:9/echo` try to.

No network at all: the upstream is an httpx transport answering in process
(it sees the URL exactly as the sidecar's HTTP client would dial it), and
the egress spy answers for 127.0.0.1 only, never asking a resolver.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hypothesis import strategies as st

from sidecar.app import Sidecar
from sidecar.clock import SYSTEM_CLOCK
from sidecar.config import Settings
from sidecar.errors import UpstreamUnreachable
from sidecar.outbound.upstream import UpstreamClient
from sidecar.routing import routes
from sidecar.routing.routes import Endpoint, Route
from sidecar.store.memory import MemoryStore

#: Where every URL the strategies name points: the in-process upstream.
UPSTREAM_HOST = "127.0.0.1"
UPSTREAM = f"http://{UPSTREAM_HOST}:9"
#: The one stored route, for X-Route-Key and /r/pay/ path mode.
ROUTE = Route("pay", (Endpoint(f"{UPSTREAM}/base", headers=(("Stripe-Version", "1"),)),))
#: An LLM route (SPEC §10) mixing both formats, so calls cross between them.
LLM_ROUTE = Route(
    "chat",
    (
        Endpoint(UPSTREAM, provider="openai"),
        Endpoint(UPSTREAM, provider="anthropic", model_map=(("gpt-4o-mini", "claude-haiku-4-5"),)),
    ),
)
#: A second loopback address no strategy ever names: reaching it is a moved request.
FOREIGN_HOST = "127.0.0.2"

# --- strategies --------------------------------------------------------------

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT"]
_TARGETS = [
    b"/",
    b"/v1/charges",
    b"/r/pay/v1/charges",
    b"/r/nope/x",
    b"/r/",
    b"//127.0.0.2/x",
    b"/@127.0.0.2:9/x",
    b"*",
    b"echo",
    b"@127.0.0.2:9/echo",
    b":9@127.0.0.2/echo",
    b"http://127.0.0.2:9/x",
    b"127.0.0.2:9",
    b"/a#@127.0.0.2/",
    b"/\\@127.0.0.2/",
    b"/%2e%2e/%40127.0.0.2",
    b"/caf\xc3\xa9",
    b"/a b",
]
_DURATIONS = ["0", "1", "5ms", "250ms", "1s", "5m", "6h", "-1s", "1.5s", "lots", "5 parsecs", ""]
_URL_TAILS = [
    "",
    "/",
    "/v1",
    "?x=1",
    "/p?q=1&r=2",
    "#frag",
    "\t/x",
    " /x",
    "/\\@127.0.0.2/",
    "/%2F",
    "/donn\u00e9es",
    "/\u20ac?q=\u20ac",
]
_URL_HOSTS = [
    UPSTREAM,
    f"https://{UPSTREAM_HOST}:9",
    f"http://{UPSTREAM_HOST}",
    f"http://user:pw@{UPSTREAM_HOST}:9",
    f"http://{UPSTREAM_HOST} :9",
    f"http://{UPSTREAM_HOST}:99999",
    f"http://{UPSTREAM_HOST}:x",
    "http://%31%32%37.0.0.1:9",
    "http://\uff11\uff12\uff17.0.0.1:9",
    "http://[::1]:9",
    "http://[::1%25lo]:9",
    "http://[zz]:9",
    "http://localhost:9",
    "http://bücher.example",
    "ftp://127.0.0.1/",
    "http:/127.0.0.1/",
    "//127.0.0.1/",
    "http://",
    "http://@",
    "http://a@b@127.0.0.1:9",
    "http://127.0.0.1:9\\@localhost/",
]


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


#: Any bytes, UTF-8 text of any characters, printable ASCII, or a known troublemaker.
_ANY_VALUE = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(_utf8),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(_utf8),
    st.sampled_from(
        [b"", b" ", b"na\xc3\xafve", b"caf\xe9", b"cl\xc3\xa9", b"r\xc3\xa9q-1", b"a\r\nb"]
    ),
)


def _ascii(values: list[str]) -> st.SearchStrategy[bytes]:
    return st.sampled_from([_utf8(value) for value in values])


_URL = st.builds(
    lambda host, tail: _utf8(host + tail),
    st.sampled_from(_URL_HOSTS),
    st.sampled_from(_URL_TAILS),
)
#: Mostly the upstream itself, so that most requests get through the door.
_GOOD_URL = st.one_of(st.just(_utf8(UPSTREAM)), st.just(_utf8(UPSTREAM + "/v1")), _URL)
_URLS = st.lists(_URL, min_size=1, max_size=3).map(b", ".join)

#: Each control header with values that look right, and garbage.
_CONTROL_VALUES: dict[str, st.SearchStrategy[bytes]] = {
    "x-target-url": _URL,
    "x-failover-url": _URLS,
    "x-webhook-callback": _URL,
    "x-route-key": _ascii(["pay", "nope", "", "pay pay", "../pay"]),
    "x-retry-count": _ascii(["0", "1", "3", "10", "11", "-1", "lots", "\uff13"]),
    "x-retry-delay": _ascii(_DURATIONS),
    "x-retry-on": _ascii(["5xx", "gateway-error,429", "409", "timeout, reset", "600", "nope"]),
    "x-timeout": _ascii(_DURATIONS),
    "x-deadline": _ascii(_DURATIONS),
    "x-smart-cache": _ascii(["5m", "5m; serve-fresh", "off", "5 parsecs", "5m; nope=1", "5m;;"]),
    "x-circuit-breaker": _ascii(
        ["on", "off", "on; threshold=3; cooldown=10s", "on; threshold=0", "maybe", "off; x"]
    ),
    "x-webhook-retry-for": _ascii(_DURATIONS),
    "x-idempotency-ttl": _ascii(_DURATIONS),
    "x-idempotency-wait": _ascii(["on", "off", "sometimes"]),
    "x-proxy-idempotency-key": _ascii(["k1", "k2", "", "a" * 300]),
    "idempotency-key": _ascii(["k1", "k2", "", "a" * 300]),
    "x-identity-key": _ascii(["sk_test_1", "Bearer x", "cl\u00e9"]),
    "x-proxy-debug": _ascii(["on", "off", "loud"]),
    "x-proxy-record": _ascii(["on", "off", "maybe"]),
    "x-proxy-secret": _ascii(["stripe", "nope", ""]),
    "x-proxy-master-key": _ascii(["passphrase", ""]),
    "x-extract": _ascii(["/ok", "", "ok", "/a~1b/0", "/\u00e9"]),
    "x-mirapi-key": _ascii(["mk_nope", ""]),
    "x-request-id": _ascii(["req-1", "r\u00e9q-1", "", "a" * 300, "4242 4242 4242 4242"]),
    "x-llm-provider": _ascii(["openai", "anthropic", "OpenAI", "gemini", ""]),
    "x-llm-budget": _ascii(["0.05", "0.05; clamp", "0", "-1", "lots", "0.05; nope", "1e9", ";"]),
    "x-llm-first-token-timeout": _ascii(_DURATIONS),
}
_FRAMING_VALUES: dict[str, st.SearchStrategy[bytes]] = {
    "content-length": _ascii(["0", "3", "10", "99999999999", "-1", "abc", "1, 1"]),
    "transfer-encoding": _ascii(["chunked", "gzip, chunked", "identity", "bogus"]),
    "connection": _ascii(["close", "keep-alive, x-custom", "upgrade", "host"]),
    "host": _ascii(["127.0.0.1:8742", "localhost", "evil.example", "[::1]:8742", ""]),
    "content-type": _ascii(["application/json", "text/plain; charset=utf-8", "multipart/x"]),
}
_KNOWN = {**_CONTROL_VALUES, **_FRAMING_VALUES}
_ORDINARY_NAMES = [b"user-agent", b"accept-language", b"authorization", b"cookie", b"x-custom"]
_NAME = st.one_of(
    st.sampled_from(_ORDINARY_NAMES),
    st.binary(max_size=12),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12).map(_utf8),
)
#: A known header with a value of its kind.
_FITTING = st.one_of(*(st.tuples(st.just(_utf8(n)), values) for n, values in _KNOWN.items()))
#: One header: mostly a known one with a fitting value; else garbage in a known
#: header, or any name with any value.
_HEADER = st.one_of(
    _FITTING,
    _FITTING,
    _FITTING,
    st.tuples(st.sampled_from([_utf8(n) for n in _KNOWN]), _ANY_VALUE),
    st.tuples(st.sampled_from(_ORDINARY_NAMES), _ANY_VALUE),
    st.tuples(_NAME, _ANY_VALUE),
)
_GOOD_TARGET = st.sampled_from(
    [
        b"/",
        b"/v1/charges",
        b"/r/pay/v1/charges",
        b"/a/b%20c",
        b"/v1/chat/completions",
        b"/v1/messages",
        b"/r/chat/v1/chat/completions",
        b"/r/chat/v1/messages",
    ]
)
#: LLM call bodies (SPEC §10): well formed, streamed, what the other format
#: cannot express, and odd values where numbers belong.
_LLM_BODIES = _ascii(
    [
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}',
        '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}',
        '{"model":"gpt-4o-mini","n":2,"messages":[{"role":"user","content":"hi"}]}',
        '{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"x"}]}',
        '{"model":"gpt-4o-mini","max_tokens":-5,"messages":"nope"}',
        '{"model":7,"max_tokens":1e400,"stream":"yes","stream_options":3}',
        '{"model":"gpt-4o-mini","max_completion_tokens":99999999999999999999,"messages":[]}',
        '{"model":"gpt-4o-mini","tools":[{"type":"function"}],"messages":[{"role":"tool"}]}',
        "[]",
    ]
)
_ANY_TARGET = st.one_of(
    st.sampled_from(_TARGETS),
    st.sampled_from(_TARGETS),
    st.sampled_from(_TARGETS),
    st.binary(max_size=20).map(lambda tail: b"/" + tail),
    st.binary(max_size=20),
)
_QUERY = st.one_of(
    st.sampled_from([b"", b"a=1", b"x=%00", b"#", b"@127.0.0.2", b"caf\xc3\xa9"]),
    st.binary(max_size=12),
)
#: How often a part of a request is drawn well-formed, out of 10.
_WELL_FORMED = 7


@dataclass(frozen=True)
class Case:
    """One request as an ASGI server hands it to the app."""

    method: str
    raw_path: bytes
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    #: The body as the server delivers it, chunk by chunk.
    chunks: tuple[bytes, ...]
    #: The client goes away after the chunks instead of ending the body.
    disconnect: bool


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A request of any shape; each part is mostly well formed, so most get far."""

    def well_formed() -> bool:
        return draw(st.integers(0, 9)) < _WELL_FORMED

    method = draw(st.sampled_from(_METHODS) if well_formed() else st.text(max_size=8))
    raw_path = draw(_GOOD_TARGET if well_formed() else _ANY_TARGET)
    query = b"" if well_formed() else draw(_QUERY)
    headers = draw(st.lists(_HEADER, max_size=5))
    if well_formed():
        headers.insert(draw(st.integers(0, len(headers))), (b"x-target-url", draw(_GOOD_URL)))
    if well_formed():
        headers.insert(0, (b"host", b"127.0.0.1:8742"))
    if well_formed() and b"/v1/" in raw_path and draw(st.booleans()):
        chunks: tuple[bytes, ...] = (draw(_LLM_BODIES),)
    else:
        chunks = tuple(draw(st.lists(st.binary(max_size=30), max_size=3)))
    disconnect = not well_formed() and draw(st.booleans())
    return Case(method, raw_path, query, tuple(headers), chunks, disconnect)


# --- spies -------------------------------------------------------------------


class SpyEgress:
    """Records every host it is asked to vet; answers for the upstream's address only.

    Nothing is looked up: any other host is unreachable, as a name that does
    not resolve would be.
    """

    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def vet(self, host: str, port: int) -> list[str]:
        self.hosts.append(host)
        if host == UPSTREAM_HOST:
            return [UPSTREAM_HOST]
        raise UpstreamUnreachable(f"could not resolve {host} (the fuzz looks nothing up)")


class SpyTransport(httpx.AsyncBaseTransport):
    """The upstream, in process: records each URL's host as the client would dial it."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        return httpx.Response(
            200, headers=[(b"content-type", b"application/json")], content=b'{"ok":true}'
        )


class TracebackLog(logging.Handler):
    """Keeps every log record that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.tracebacks: list[str] = []

    #: Loggers of the test's own upstream, an aiohttp server in this process:
    #: what it thinks of a request the sidecar forwarded (say, a repeated
    #: User-Agent, which HTTP allows and aiohttp's parser refuses) is not the
    #: sidecar's traceback. The sidecar serves on Hypercorn, never aiohttp.
    NOT_THE_SIDECAR = ("aiohttp.server", "aiohttp.access", "aiohttp.web")

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(self.NOT_THE_SIDECAR):
            return
        if record.exc_info or record.exc_text or "Traceback (most recent" in record.getMessage():
            self.tracebacks.append(f"{record.name}: {record.getMessage()}")


# --- the harness -------------------------------------------------------------


@dataclass
class Verdict:
    """What one case did, and which parts of the property it broke."""

    status: int | None
    #: The app raised, or never answered a client that stayed.
    failures: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    #: Hosts the upstream client was pointed at that no request named.
    other_hosts: list[str] = field(default_factory=list)
    #: The start of a 500's body.
    error_500: bytes | None = None

    @property
    def problems(self) -> list[str]:
        """Every way the case broke the property, in words."""
        found = list(self.failures)
        if self.error_500 is not None:
            found.append(f"500: {self.error_500!r}")
        found += [f"traceback in the log: {text}" for text in self.tracebacks]
        found += [f"called a host no request named: {host!r}" for host in self.other_hosts]
        return found


def _named(case: Case) -> str:
    """Every URL the request names, lower case, as one string to search hosts in."""
    names = (b"x-target-url", b"x-failover-url", b"x-webhook-callback")
    return " ".join(
        value.decode("latin-1").lower() for name, value in case.headers if name.lower() in names
    )


class Harness:
    """A sidecar started in process with the spies; `run` checks one case."""

    def __init__(self) -> None:
        self.egress = SpyEgress()
        self.transport = SpyTransport()
        data_dir = Path(tempfile.mkdtemp(prefix="mirapi-fuzz-"))
        settings = Settings(data_dir=data_dir, allow_private=True, job_workers=1)
        client = UpstreamClient(self.egress, transport=self.transport)
        store = MemoryStore(SYSTEM_CLOCK)
        self.app = Sidecar(settings, egress=self.egress, client=client, store=store)
        self.log = TracebackLog()
        #: Every URL named so far: a background job calls what an earlier case named.
        self.named = ROUTE.endpoints[0].url
        self._lifespan: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def start(self) -> None:
        """Start the app as Hypercorn would (lifespan), store the route, capture the log."""
        logging.getLogger().addHandler(self.log)
        self._lifespan = asyncio.create_task(self.app.lifespan(self._inbox.get, self._outbox.put))
        await self._inbox.put({"type": "lifespan.startup"})
        answer = await self._outbox.get()
        assert answer["type"] == "lifespan.startup.complete", answer
        for route in (ROUTE, LLM_ROUTE):
            await self.app.store.record_put("routes", route.name, routes.encode(route), True)
        await self.app.routes.refresh()

    async def stop(self) -> None:
        """Shut the app down and stop capturing the log."""
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._outbox.get()
        if self._lifespan is not None:
            await self._lifespan
        logging.getLogger().removeHandler(self.log)

    async def run(self, case: Case) -> Verdict:
        """Send `case` through the app; the verdict lists what broke the property."""
        self.named += " " + _named(case)
        hosts_before = (len(self.egress.hosts), len(self.transport.hosts))
        tracebacks_before = len(self.log.tracebacks)
        sent: list[dict[str, Any]] = []
        pending = [
            {"type": "http.request", "body": chunk, "more_body": True} for chunk in case.chunks
        ]
        pending.append(
            {"type": "http.disconnect"}
            if case.disconnect
            else {"type": "http.request", "body": b"", "more_body": False}
        )

        async def receive() -> dict[str, Any]:
            if pending:
                return pending.pop(0)
            await asyncio.sleep(3600)  # a server never answers again after the end
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "http",
            "method": case.method,
            "path": case.raw_path.decode("latin-1"),
            "raw_path": case.raw_path,
            "query_string": case.query,
            "root_path": "",
            "headers": list(case.headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8742),
        }
        verdict = Verdict(None)
        try:
            await asyncio.wait_for(self.app(scope, receive, send), 10)
        except Exception as error:  # the server would log this and drop the connection
            verdict.failures.append(f"the app raised {type(error).__name__}: {error}")
        # Let background work the request started (jobs, observers) run a little.
        await asyncio.sleep(0)
        if sent and sent[0]["type"] == "http.response.start":
            verdict.status = sent[0]["status"]
        if verdict.status == 500:
            verdict.error_500 = b"".join(m.get("body", b"") for m in sent[1:])[:300]
        if verdict.status is None and not case.disconnect and not verdict.failures:
            verdict.failures.append("no answer")
        verdict.tracebacks = self.log.tracebacks[tracebacks_before:]
        called = self.egress.hosts[hosts_before[0] :] + self.transport.hosts[hosts_before[1] :]
        verdict.other_hosts = [
            host
            for host in called
            if FOREIGN_HOST in host or host.lower().strip("[]") not in self.named
        ]
        return verdict
