"""The PCI guard end to end (issue 6, SPEC §2.2): a real sidecar process, a real upstream.

Every card format is refused with `400 pci_card_number` and an offset, in
every place a request carries data (a JSON, form or text body, the query
string), before the upstream is called and before anything is stored:
requests that would be queued, recorded, cached or kept for idempotent
replay are refused first. Numbers that only look like cards go through.

The proof that nothing was written is a byte search: once the sidecar has
stopped, every file under the test's directory (the SQLite file and its
WAL, `sidecar.log`, anything else) is read and searched for each card
number in each form it was sent in, and for the base64 of each refused
body (records and jobs keep bodies in base64). The search is shown able to
find things: it must find the request ids (a header) that the access log
keeps for passed and refused requests alike, and the bodies of the clean
twins of the storing requests (a cached answer and a replay record in
plain, a queued job in base64). Recording is on for every request
(`record_bodies = true`), so a refused request that reached the recorder
would show up too.

The last test does the same on a sidecar whose store is a private Redis
with its append-only file on: cards in the path, the query, the body and
ordinary headers (which pass and are recorded, masked), a job with a card
in a header (refused), and the data dir, the log and every Redis file (AOF
and an uncompressed RDB) are searched for each card's digits in any
grouping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.support.cli import Cli, kill_leftover
from tests.support.redis import RedisServer
from tests.support.upstream import Upstream, echo, start_upstream

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TEXT = {"Content-Type": "text/plain"}
#: Request ids of the requests that pass: the access log keeps them, the search must find them.
PASSED = "pci-e2e-passed"
#: In the bodies of requests that are stored (cached, queued, kept for replay).
STORED = "pci-e2e-stored"


def luhn_complete(partial: str) -> str:
    """`partial` plus the check digit that makes it pass Luhn (not using sidecar.security.pci)."""
    for check in "0123456789":
        digits = [int(d) for d in reversed(partial + check)]
        doubled = [d * 2 - 9 if d > 4 else d * 2 for d in digits[1::2]]
        total = sum(digits[::2]) + sum(doubled)
        if total % 10 == 0:
            return partial + check
    raise AssertionError("unreachable: one of ten digits completes Luhn")


def card(prefix: str, length: int) -> str:
    """A Luhn-valid number of `length` digits starting with `prefix`."""
    return luhn_complete(prefix.ljust(length - 1, "0"))


# One or more per brand range and length class of the brand table.
CARDS = {
    "visa": "4111111111111111",
    "visa-13": "4222222222222",
    "visa-19": card("4539", 19),
    "mastercard-51": "5105105105105100",
    "mastercard-55": "5555555555554444",
    "mastercard-2221": "2223003122003222",
    "mastercard-2720": card("2720", 16),
    "amex-34": card("3434", 15),
    "amex-37": "378282246310005",
    "discover-6011": "6011111111111117",
    "discover-644": card("6445", 16),
    "discover-65": card("6500", 16),
    "diners-300": "30569309025904",
    "diners-36": card("3622", 14),
    "diners-38": card("3852", 14),
    "jcb": "3566002020360505",
    "unionpay": "6200000000000005",
    "unionpay-19": card("6212", 19),
    "maestro-50-12": card("5000", 12),
    "maestro-6304": card("6304", 16),
    "maestro-67": "6759649826438453",
    "mir": card("2200", 16),
}

# Luhn-valid (Luhn alone would flag each) or everyday numbers the brand table lets through.
NOT_CARDS = {
    "luhn-valid, first digit no brand has": luhn_complete("100000000000000"),
    "luhn-valid 19-digit order id": luhn_complete("700000000000000000"),
    "luhn-valid ms timestamp": luhn_complete("170000000012"),
    "luhn-valid 2-series outside Mastercard": luhn_complete("280000000000000"),
    "luhn-valid 17 digits from 4": luhn_complete("4111111111111111"),
    "luhn-valid 12 digits from 4 (a phone)": luhn_complete("44207946095"),
    "discord snowflake (18 digits, Discover's 65, luhn-valid)": "658377835337406812",
    "luhn-valid 19-digit order number from 6011": luhn_complete("601100000000004242"),
    "luhn-valid 19-digit order number from 4": luhn_complete("453900000000004242"),
    "phone": "+44 20 7946 0958",
    "us phone": "+1 415-555-2671",
    "order id": "ORD-2024-000187-5531",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
}


def grouped(number: str, separator: str) -> str:
    """`number` in groups of four joined by `separator`."""
    return separator.join(number[i : i + 4] for i in range(0, len(number), 4))


@dataclass
class Sent:
    """What was sent to the sidecar, to search the disk for afterwards."""

    #: Every spelling of a card number that went out: plain, grouped, URL-encoded.
    card_forms: set[str] = field(default_factory=set)
    #: Bodies that held a card: a record or a job would keep them base64-encoded.
    card_bodies: list[bytes] = field(default_factory=list)
    #: Ids of refused requests: the access log and the pci_block events keep them.
    refused_ids: list[str] = field(default_factory=list)


@dataclass
class Sidecar:
    """A sidecar process on a fresh data dir, configured to record every request's body."""

    cli: Cli
    url: str
    root: Path

    def stop(self) -> None:
        done = self.cli("sidecar", "stop")
        assert done.returncode == 0, done.stderr


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server, runner = await start_upstream()
    server.default = echo()
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    config = tmp_path / "config.toml"
    # Recording on for every request: a refused one would be recorded if the
    # guard let anything of it through.
    config.write_text("record_bodies = true\n")
    cli = Cli(tmp_path / "data", config)
    try:
        url = str(cli.start("--allow-private")["address"])
        yield Sidecar(cli, url, tmp_path)
    finally:
        if cli.state_file.exists():
            cli("sidecar", "stop")
            kill_leftover(cli.state_file)


def files_under(root: Path) -> dict[Path, bytes]:
    """Every file under `root`, read whole."""
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def holding(files: dict[Path, bytes], needle: bytes) -> list[str]:
    """The names of the files whose bytes contain `needle`."""
    return [path.name for path, data in files.items() if needle in data]


def assert_refused(response: httpx.Response, offset: int, decoded: bool, forms: set[str]) -> None:
    """400 pci_card_number at `offset` (in the URL-decoded text when `decoded`), no digits."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "pci_card_number"
    where = f"at offset {offset}" + (" once URL-decoded;" if decoded else ";")
    assert where in error["message"], error["message"]
    head = "".join(f"{name}: {value}\n" for name, value in response.headers.items())
    for form in forms:
        assert form.encode() not in response.content + head.encode()


def assert_nothing_written(root: Path, sent: Sent) -> dict[Path, bytes]:
    """No file under `root` holds a card form or a refused body's base64; the files read."""
    files = files_under(root)
    names = {path.name: len(data) for path, data in files.items()}
    # The store and the log at least, or the search proves nothing.
    assert names.get("mirapi.db") and names.get("sidecar.log"), names
    for form in sorted(sent.card_forms):
        assert not holding(files, form.encode()), f"a card number ({len(form)} chars) on disk"
    for body in sent.card_bodies:
        assert not holding(files, base64.b64encode(body)), "a refused body on disk (base64)"
    return files


class Client:
    """Sends to one sidecar, and checks and notes down each refusal."""

    def __init__(self, http: httpx.AsyncClient, upstream: Upstream, sent: Sent) -> None:
        self.http = http
        self.upstream = upstream
        self.sent = sent

    async def refused(
        self,
        offset: int,
        forms: set[str],
        *,
        url: str = "/v1/charges",
        body: bytes = b"",
        decoded: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        """POST; it must be refused at `offset` without an upstream call."""
        calls = len(self.upstream.seen)
        request_id = f"pci-e2e-refused-{len(self.sent.refused_ids)}"
        headers = {**(headers or {}), "X-Target-URL": self.upstream.url, "X-Request-ID": request_id}
        response = await self.http.post(url, headers=headers, content=body)
        assert response.request.url.raw_path == url.encode(), "not sent as written"
        assert_refused(response, offset, decoded, forms)
        assert len(self.upstream.seen) == calls, "the upstream was called for a refused request"
        self.sent.refused_ids.append(request_id)
        if body:
            self.sent.card_bodies.append(body)


async def test_every_card_format_is_refused_unsent_and_unwritten_and_non_cards_pass(
    sidecar: Sidecar, upstream: Upstream
) -> None:
    sent = Sent()
    async with httpx.AsyncClient(base_url=sidecar.url, timeout=20) as http:
        client = Client(http, upstream, sent)
        for brand, number in CARDS.items():
            spaced, dashed = grouped(number, " "), grouped(number, "-")
            forms = {number, spaced, dashed, spaced.replace(" ", "+"), spaced.replace(" ", "%20")}
            sent.card_forms |= forms
            for text in (number, spaced, dashed):
                body = json.dumps({"amount": 1999, "brand": brand, "card": text}).encode()
                await client.refused(body.index(text.encode()), forms, body=body)
                # Card words before it: 17-19 digits count only in a card context.
                body = f"please charge card {text} today".encode()
                await client.refused(19, forms, body=body, headers=TEXT)
                # A form body as it is, and form bodies and query strings
                # URL-encoded (a space as `+` or `%20`, as browsers and curl send it).
                body = f"amount=1999&pan={text}".encode()
                await client.refused(16, forms, body=body, headers=FORM)
                for encoded in dict.fromkeys((text.replace(" ", "+"), text.replace(" ", "%20"))):
                    decoded = encoded != text
                    if decoded:
                        body = f"amount=1999&pan={encoded}".encode()
                        await client.refused(16, forms, body=body, decoded=True, headers=FORM)
                    url = f"/v1/charges?pan={encoded}&n=1"
                    await client.refused(4, forms, url=url, decoded=decoded)
        assert upstream.seen == []

        # Numbers that only look like cards reach the upstream, in every place.
        for index, (name, number) in enumerate(NOT_CARDS.items()):
            body = json.dumps({"what": name, "value": number}).encode()
            headers = {"X-Target-URL": upstream.url, "X-Request-ID": f"{PASSED}-{index}"}
            url = f"/v1/orders?ref={quote(number)}"
            answer = await http.post(url, headers=headers, content=body)
            assert answer.status_code == 200, (name, answer.text)
            assert answer.content == body  # echoed: it went through untouched
            note = f"call {number} about it".encode()
            answer = await http.post("/v1/notes", headers=headers | TEXT, content=note)
            assert answer.status_code == 200, (name, answer.text)
        assert len(upstream.seen) == 2 * len(NOT_CARDS)

    sidecar.stop()
    files = assert_nothing_written(sidecar.root, sent)
    # The search finds what was written: the passed and the refused requests'
    # ids (headers they sent), which the access log keeps.
    assert "sidecar.log" in holding(files, f"{PASSED}-0".encode())
    for request_id in (sent.refused_ids[0], sent.refused_ids[-1]):
        assert "sidecar.log" in holding(files, request_id.encode())


async def test_a_request_that_would_be_stored_is_refused_before_anything_is_stored(
    sidecar: Sidecar, upstream: Upstream
) -> None:
    number = CARDS["visa"]
    forms = {number, grouped(number, " "), grouped(number, "-")}
    sent = Sent(card_forms=set(forms))
    callback = f"{upstream.url}/callback"
    storing = {
        "job": {"X-Webhook-Callback": callback},
        "replay": {"X-Proxy-Idempotency-Key": "pci-e2e-key"},
        "cache": {"X-Smart-Cache": "5m; serve-fresh"},
        "record": {"X-Proxy-Record": "on"},
    }
    async with httpx.AsyncClient(base_url=sidecar.url, timeout=20) as http:
        client = Client(http, upstream, sent)
        for what, headers in storing.items():
            for text in forms:
                body = json.dumps({"for": what, "card": text}).encode()
                await client.refused(body.index(text.encode()), forms, body=body, headers=headers)
            await client.refused(4, forms, url=f"/v1/charges?pan={number}", headers=headers)
        assert upstream.seen == []

        # The same requests without the card are stored: the headers work,
        # and the stored bodies are where the search below looks.
        def clean(what: str) -> bytes:
            return json.dumps({"for": what, "note": f"{STORED}-{what}"}).encode()

        async def post(what: str) -> httpx.Response:
            headers = {"X-Target-URL": upstream.url, **storing[what]}
            return await http.post("/v1/charges", headers=headers, content=clean(what))

        queued = await post("job")
        assert queued.status_code == 202, queued.text
        # The key is free: the refused requests that used it left nothing under it
        # (a different body under a used key would get 422, the same one a replay).
        first = await post("replay")
        assert first.status_code == 200 and "idempotent-replayed" not in first.headers
        assert (await post("replay")).headers.get("idempotent-replayed") == "true"
        assert (await post("cache")).status_code == 200
        hit = await post("cache")
        assert "hit" in hit.headers.get("cache-status", ""), hit.headers
        # Answered from the cache: the upstream saw that body once. (Counted by
        # body: the job's run and callback may reach the upstream meanwhile.)
        assert [seen.body for seen in upstream.seen].count(clean("cache")) == 1
        assert (await post("record")).status_code == 200
        assert await job_done(http, queued.json()["status_url"])

    sidecar.stop()
    files = assert_nothing_written(sidecar.root, sent)
    assert "mirapi.db" in holding(files, f"{STORED}-cache".encode())  # the cached answer
    assert "mirapi.db" in holding(files, f"{STORED}-replay".encode())  # the replay record
    assert "mirapi.db" in holding(files, base64.b64encode(clean("job")))  # the queued job


async def job_done(http: httpx.AsyncClient, status_url: str, within: float = 15.0) -> bool:
    """Poll the job until it has finished; False if it did not within `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        status = (await http.get(status_url)).json().get("status")
        if status in ("succeeded", "failed"):
            return True
        await asyncio.sleep(0.1)
    return False


# --- cards in the path, query, body and ordinary headers, on a Redis store ------

#: A 19-digit Discover, a card only where its label says so (here: the header name).
LONG_CARD = card("6011", 19)


def redis_command(server: RedisServer, *args: str) -> bytes:
    """Send one command to the private server and return its first reply bytes."""
    raw = f"*{len(args)}\r\n".encode()
    for arg in args:
        raw += f"${len(arg.encode())}\r\n{arg}\r\n".encode()
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(str(server.socket))
        conn.sendall(raw)
        return conn.recv(4096)


def any_grouping(number: str) -> re.Pattern[bytes]:
    """The digits of `number` with any separator or none between any two (`+`, `%20` too)."""
    separator = rb"(?:[ +\-]|%20|%2[dD])?"
    return re.compile(separator.join(re.escape(d.encode()) for d in number))


@pytest.fixture
def redis_with_aof(private_redis: RedisServer) -> RedisServer:
    """The test's own redis-server, logging every write to its append-only file as commands."""
    assert redis_command(private_redis, "CONFIG", "SET", "aof-use-rdb-preamble", "no") == b"+OK\r\n"
    assert redis_command(private_redis, "CONFIG", "SET", "appendonly", "yes") == b"+OK\r\n"
    assert redis_command(private_redis, "CONFIG", "SET", "rdbcompression", "no") == b"+OK\r\n"
    return private_redis


def redis_files(server: RedisServer) -> dict[Path, bytes]:
    """Every file the server wrote (the AOF's base and increments, an RDB saved now)."""
    assert redis_command(server, "SAVE") == b"+OK\r\n"
    files = files_under(server.directory)
    assert any(path.suffix == ".aof" for path in files), sorted(p.name for p in files)
    assert any(path.suffix == ".rdb" for path in files), sorted(p.name for p in files)
    return files


async def test_cards_in_path_query_body_and_headers_leave_no_trace_in_files_log_or_redis(
    tmp_path: Path, upstream: Upstream, redis_with_aof: RedisServer
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("record_bodies = true\n")
    cli = Cli(tmp_path / "data", config)
    numbers = [CARDS["visa"], CARDS["amex-37"], CARDS["mastercard-55"], LONG_CARD]
    visa, amex, mastercard = numbers[:3]
    base = {"X-Target-URL": upstream.url}
    try:
        url = str(cli.start("--allow-private", "--redis", redis_with_aof.url)["address"])
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:

            async def refused(path: str, headers: dict[str, str], body: bytes = b"") -> str:
                answer = await http.post(path, headers=base | headers, content=body)
                assert answer.status_code == 400, answer.text
                assert answer.json()["error"]["code"] == "pci_card_number"
                for number in numbers:
                    assert not any_grouping(number).search(answer.content)
                return str(answer.json()["error"]["message"])

            # The path, raw and URL-encoded; the query; the body: refused, unsent.
            assert "the path at offset 10;" in await refused(f"/v1/cards/{visa}", {})
            spaced = grouped(amex, "%20")
            assert "once URL-decoded" in await refused(f"/v1/cards/{spaced}/charge", {})
            assert "query string" in await refused(f"/v1/x?pan={grouped(visa, '+')}", {})
            body = json.dumps({"card": grouped(mastercard, "-"), "amount": 100}).encode()
            # With a card in X-Request-ID too: the pci_block event keeps the id.
            assert "the body" in await refused("/v1/x", {"X-Request-ID": f"rq-{visa}"}, body)
            assert upstream.seen == []

            # Ordinary headers: forwarded as sent, recorded masked.
            headers = {
                "X-Card": visa,
                "X-Note": f"pay with {grouped(mastercard, ' ')} today",
                "Referer": f"https://shop.test/pay?pan={grouped(amex, '+')}",
                "X-Card-Number": LONG_CARD,
                "X-Marker": "pci-e2e-headers",
            }
            sent = await http.post("/v1/orders", headers=base | headers, content=b'{"n":1}')
            assert sent.status_code == 200, sent.text
            assert upstream.seen[-1].headers["x-card"] == visa  # forwarded unchanged
            # An unknown route is refused before the guard, and recorded: the path masked.
            missing = await http.get(f"/r/no-such-route/cards/{visa}")
            assert missing.status_code == 404, missing.text

            # A job would keep its headers as sent: refused, nothing queued.
            job = {"X-Webhook-Callback": f"{upstream.url}/done", "X-Card": visa}
            message = await refused("/v1/charges", job, b'{"amount":1}')
            assert "the x-card header at offset 0" in message and "job" in message
            jobs = await http.get("/_mirapi/jobs")
            assert visa.encode() not in jobs.content
        cli("sidecar", "stop")
    finally:
        if cli.state_file.exists():
            cli("sidecar", "stop")
            kill_leftover(cli.state_file)

    files = {**files_under(tmp_path / "data"), **redis_files(redis_with_aof)}
    names = sorted(path.name for path in files)
    assert "sidecar.log" in names, names
    for number in numbers:
        holders = [path.name for path, data in files.items() if any_grouping(number).search(data)]
        assert holders == [], f"a {len(number)}-digit card number is in {holders}"
    # The search finds what was written: the recorded request with the card
    # headers (its marker and the masked cards) is in Redis.
    aof = b"".join(data for path, data in files.items() if path.suffix == ".aof")
    assert b"pci-e2e-headers" in aof
    assert b"************1111" in aof and b"***************" + LONG_CARD[-4:].encode() in aof
    assert b"/cards/************1111" in aof  # the unknown route's record
