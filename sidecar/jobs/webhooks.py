"""Signed job callbacks, per the Standard Webhooks spec (SPEC §5).

The callback body is JSON:

    {"job_id", "status", "attempts",
     "response": {"status", "headers": {name: value}, "body"}}

`headers` is an object of lower-case names; a name the upstream sent more
than once has its values joined with ", " (RFC 9110 §5.3). `body` is the
upstream's body as text when it is UTF-8, else base64 with
`"body_encoding": "base64"` next to it. A job that never got an answer
(cancelled) has `"response": null`.

Signing (https://www.standardwebhooks.com): the key is the base64 part of
the install's secret after `whsec_`; the signature is
base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}." + body)), sent
as `webhook-signature: v1,<signature>`. `webhook-id` is `<job id>.<runs>`:
stable across deliveries of one outcome, so a receiver can drop duplicates,
and new when `mirapi jobs retry` runs the job again and so makes a new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import orjson

from sidecar.clock import Clock
from sidecar.errors import UpstreamFailure
from sidecar.jobs.model import Job
from sidecar.outbound.upstream import UpstreamClient
from sidecar.store.jobs import JobStore

SECRET_PREFIX = "whsec_"
#: Per delivery: connecting and waiting for the receiver's answer.
DELIVERY_TIMEOUT = 10.0
#: What is read of a receiver's answer (then dropped) to keep the connection.
_ANSWER_LIMIT = 64 * 1024


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: "v1," + base64 HMAC-SHA256."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _response_view(job: Job) -> dict[str, object] | None:
    outcome = job.outcome
    if outcome is None:
        return None
    headers: dict[str, str] = {}
    for name, value in outcome.headers:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    view: dict[str, object] = {"status": outcome.status, "headers": headers}
    try:
        view["body"] = outcome.body.decode("utf-8")
    except UnicodeDecodeError:
        view["body"] = base64.b64encode(outcome.body).decode()
        view["body_encoding"] = "base64"
    return view


def callback_body(job: Job) -> bytes:
    """The JSON the callback URL receives for `job`."""
    return orjson.dumps(
        {
            "job_id": job.id,
            "status": job.status,
            "attempts": job.attempts,
            "response": _response_view(job),
        }
    )


def callback_headers(secret: str, job: Job, body: bytes, now: float) -> list[tuple[str, str]]:
    """The headers of one delivery of `body`, signed with `secret` at `now`."""
    timestamp = int(now)
    message_id = message_id_of(job)
    return [
        ("content-type", "application/json"),
        ("webhook-id", message_id),
        ("webhook-timestamp", str(timestamp)),
        ("webhook-signature", sign(secret, message_id, timestamp, body)),
    ]


def message_id_of(job: Job) -> str:
    """The callback's `webhook-id`: one per outcome of the job, not per delivery."""
    return f"{job.id}.{job.attempts}"


class CallbackSender:
    """Delivers a job's callback once, through the sidecar's egress-checked client."""

    def __init__(
        self,
        store: JobStore,
        client: UpstreamClient,
        clock: Clock,
        timeout: float = DELIVERY_TIMEOUT,
    ) -> None:
        self._store = store
        self._client = client
        self._clock = clock
        self._timeout = timeout
        self._secret: str | None = None

    async def secret(self) -> str:
        """The install's signing secret, created in the store on first use."""
        if self._secret is None:
            self._secret = await self._store.webhook_secret(new_secret())
        return self._secret

    async def __call__(self, job: Job) -> int:
        """POST the callback; the receiver's status.

        Raises EgressDenied, UpstreamFailure (no answer) or StoreUnavailable.
        """
        secret = await self.secret()
        body = callback_body(job)
        headers = callback_headers(secret, job, body, self._clock.now())
        response = await self._client.send("POST", job.callback_url, headers, body, self._timeout)
        try:
            await response.read(_ANSWER_LIMIT)
        except (ValueError, UpstreamFailure):
            pass  # a long or broken answer: only its status matters
        finally:
            await response.discard()
        return response.status
