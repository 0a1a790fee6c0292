"""A webhook receiver for tests, and a Standard Webhooks verifier of its own.

`verify` is written from the Standard Webhooks specification
(https://www.standardwebhooks.com), not from the sidecar's signing code, so
that a mistake there cannot be repeated here and pass unnoticed:

    signed content = "{webhook-id}.{webhook-timestamp}.{body}"
    key            = base64-decode(secret without its "whsec_" prefix)
    signature      = base64(HMAC-SHA256(key, signed content))
    webhook-signature: space-separated "v1,<signature>" entries; one match is enough

`Receiver` is an aiohttp server on 127.0.0.1 recording every POST, with an
optional scripted status per delivery (say 500, then 200).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SECRET_PREFIX = "whsec_"


class InvalidSignature(AssertionError):
    """The delivery does not verify (an AssertionError, so tests report it as a failure)."""


def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance: float = 300) -> None:
    """Raise InvalidSignature unless `body` is signed with `secret` per Standard Webhooks."""
    lower = {name.lower(): value for name, value in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        timestamp = lower["webhook-timestamp"]
        signatures = lower["webhook-signature"]
    except KeyError as missing:
        raise InvalidSignature(f"missing header {missing.args[0]}") from None
    if not timestamp.isdigit():
        raise InvalidSignature(f"bad webhook-timestamp {timestamp!r}")
    if abs(time.time() - int(timestamp)) > tolerance:
        raise InvalidSignature(f"webhook-timestamp {timestamp} is outside the tolerance")
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSignature("the secret has no whsec_ prefix")
    key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for entry in signatures.split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            return
    raise InvalidSignature("no v1 signature matches")


@dataclass
class Delivery:
    """One POST as the receiver got it, and the status it answered."""

    headers: dict[str, str]
    body: bytes
    answered: int

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def job_id(self) -> str | None:
        try:
            value = self.json().get("job_id")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None


@dataclass
class Receiver:
    """The running receiver: its URL, its status script and what it got."""

    url: str = ""
    #: Status per delivery, in order; once used up, `default`.
    script: deque[int] = field(default_factory=deque)
    default: int = 200
    deliveries: list[Delivery] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self, *statuses: int) -> Receiver:
        """Answer the next deliveries with these statuses, in order."""
        self.script.extend(statuses)
        return self

    def job_ids(self) -> set[str]:
        """Every job id delivered so far (whatever the receiver answered)."""
        return {d.job_id for d in self.deliveries if d.job_id is not None}

    def for_job(self, job_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.job_id == job_id]

    async def wait_for_jobs(self, count: int, within: float) -> set[str]:
        """Wait until `count` distinct job ids were delivered; fail after `within` s."""
        deadline = asyncio.get_running_loop().time() + within
        while len(self.job_ids()) < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(
                    f"{len(self.job_ids())} of {count} jobs called back within {within}s"
                )
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.5))
            except TimeoutError:
                pass
        return self.job_ids()

    async def wait_for_deliveries(self, count: int, within: float) -> list[Delivery]:
        """Wait until `count` POSTs arrived (any job, any answer); fail after `within` s."""
        deadline = asyncio.get_running_loop().time() + within
        while len(self.deliveries) < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"{len(self.deliveries)} of {count} deliveries in {within}s")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.5))
            except TimeoutError:
                pass
        return self.deliveries

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status = self.script.popleft() if self.script else self.default
        self.deliveries.append(
            Delivery({k.lower(): v for k, v in request.headers.items()}, body, status)
        )
        self._arrived.set()
        return web.Response(status=status, text="ok" if status < 400 else "no")


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """A Receiver on 127.0.0.1 with an ephemeral port, for the `async with` body."""
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver._handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()
