"""sidecar/observability/logging.py: JSON lines, merged access lines, and the redaction guard."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from sidecar.observability.logging import MASK, redact, setup_logging


@pytest.fixture
def lines() -> Iterator[Any]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging("debug", stream)

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield read
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_one_json_object_per_line(lines: Any) -> None:
    logging.getLogger("mirapi").info("listening on %s", "http://127.0.0.1:1")
    [entry] = lines()
    assert entry["level"] == "info"
    assert entry["logger"] == "mirapi"
    assert entry["message"] == "listening on http://127.0.0.1:1"
    assert entry["time"].endswith("Z")


def test_a_json_message_is_merged_not_encoded_twice(lines: Any) -> None:
    access = {"request_id": "r1", "status": 200, "level": "spoofed"}
    logging.getLogger("mirapi.access").info(json.dumps(access))
    [entry] = lines()
    assert entry["request_id"] == "r1" and entry["status"] == 200
    assert entry["level"] == "info"  # our fields win
    assert "message" not in entry


def test_exceptions_go_into_exc(lines: Any) -> None:
    try:
        raise RuntimeError("Authorization: Bearer sk_live_123")
    except RuntimeError:
        logging.getLogger("mirapi").exception("boom")
    [entry] = lines()
    assert "RuntimeError" in entry["exc"]
    assert "sk_live_123" not in entry["exc"]


def test_credentials_in_any_logger_are_masked(lines: Any) -> None:
    logging.getLogger("some.library").warning(
        "sent %s", {"Authorization": "Bearer sk_live_123", "X-MirApi-Key": "mk_1"}
    )
    logging.getLogger("mirapi.access").info(json.dumps({"cookie": "session=abc", "n": 1}))
    first, second = lines()
    assert "sk_live_123" not in first["message"] and "mk_1" not in first["message"]
    assert second["cookie"] == MASK and second["n"] == 1


def test_setup_twice_logs_once(lines: Any) -> None:
    stream = io.StringIO()
    setup_logging("info", stream)
    setup_logging("info", stream)
    logging.getLogger("mirapi").info("once")
    assert len(stream.getvalue().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer sk_live_abc", "sk_live_abc"),
        ("proxy-authorization: Basic Zm9vOmJhcg==", "Zm9vOmJhcg=="),
        ('{"x-proxy-master-key": "hunter2", "status": 1}', "hunter2"),
        ("{'X-Identity-Key': 'sk_test_9'}", "sk_test_9"),
        ("[(b'authorization', b'Bearer zzz')]", "zzz"),
        ("Cookie: session=abc; theme=dark", "session=abc"),
        ("set-cookie=id=42", "id=42"),
        ("x_mirapi_key=mk_secret next", "mk_secret"),
        ("card 4111111111111111 declined", "4111111111111111"),
        ("card 4111 1111 1111 1111", "4111 1111 1111"),
        ("card 5500-0000-0000-0004", "5500-0000"),
    ],
)
def test_redact_masks(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert MASK in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "missing X-MirApi-Key header",
        "request 550e8400-e29b-41d4-a716-446655440000 took 12 ms",
        "status 200 in 1234 ms, 10485760 bytes",
        "X-Authorization-Type: foo",
    ],
)
def test_redact_leaves_ordinary_text(text: str) -> None:
    assert redact(text) == text


def test_redacted_json_stays_json() -> None:
    text = json.dumps({"authorization": 'Bearer "quoted"', "cookie": ["a", "b"], "ok": True})
    assert json.loads(redact(text)) == {"authorization": MASK, "cookie": MASK, "ok": True}
