"""Callback bodies and Standard Webhooks signatures."""

from __future__ import annotations

import base64

import orjson

from sidecar.jobs.model import SUCCEEDED, Job, JobOutcome, JobRequest
from sidecar.jobs.webhooks import callback_body, callback_headers, new_secret, sign


def make_job(body: bytes = b'{"id":"ch_1"}') -> Job:
    return Job(
        id="job_0123456789abcdef01234567",
        request=JobRequest("POST", "/v1", "", (), b"secret request body"),
        callback_url="http://127.0.0.1:9/hook",
        created_at=1000.0,
        retry_until=2000.0,
        idempotency_key="k",
        status=SUCCEEDED,
        attempts=2,
        outcome=JobOutcome(
            200, (("content-type", "application/json"), ("x-a", "1"), ("x-a", "2")), body
        ),
    )


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    # The example from the Standard Webhooks / Svix documentation.
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_new_secret_is_whsec_and_32_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert new_secret() != secret


def test_callback_body_has_the_response_as_text() -> None:
    body = orjson.loads(callback_body(make_job()))
    assert body == {
        "job_id": "job_0123456789abcdef01234567",
        "status": "succeeded",
        "attempts": 2,
        "response": {
            "status": 200,
            "headers": {"content-type": "application/json", "x-a": "1, 2"},
            "body": '{"id":"ch_1"}',
        },
    }
    assert b"secret request body" not in callback_body(make_job())


def test_binary_response_body_is_base64() -> None:
    raw = bytes(range(256))
    response = orjson.loads(callback_body(make_job(raw)))["response"]
    assert response["body_encoding"] == "base64"
    assert base64.b64decode(response["body"]) == raw


def test_callback_headers_are_signed_with_a_stable_id() -> None:
    secret = new_secret()
    job = make_job()
    body = callback_body(job)
    headers = dict(callback_headers(secret, job, body, 1234.9))
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"] == f"{job.id}.{job.attempts}"
    assert headers["webhook-timestamp"] == "1234"
    assert headers["webhook-signature"] == sign(secret, f"{job.id}.{job.attempts}", 1234, body)
