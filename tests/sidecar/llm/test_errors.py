"""Sidecar-made errors as the real SDKs read them; provider errors classified for failover."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from sidecar.llm.errors import classify_event, classify_status, error_body
from tests.support.upstream import Upstream, reply


def test_openai_error_body_shape() -> None:
    body = json.loads(error_body("openai", 429, "llm_budget_exhausted", "budget spent", "req-1"))
    assert body == {
        "error": {
            "message": "budget spent (request id: req-1)",
            "type": "rate_limit_error",
            "param": None,
            "code": "llm_budget_exhausted",
        }
    }


def test_anthropic_error_body_shape() -> None:
    body = json.loads(error_body("anthropic", 400, "llm_price_unknown", "no price", "req-2"))
    assert body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "no price (request id: req-2)",
            "details": {"error_code": "llm_price_unknown"},
        },
        "request_id": "req-2",
    }


@pytest.mark.parametrize(
    ("status", "openai_type", "anthropic_type"),
    [
        (400, "invalid_request_error", "invalid_request_error"),
        (401, "authentication_error", "authentication_error"),
        (403, "permission_error", "permission_error"),
        (404, "not_found_error", "not_found_error"),
        (413, "invalid_request_error", "request_too_large"),
        (422, "invalid_request_error", "invalid_request_error"),
        (429, "rate_limit_error", "rate_limit_error"),
        (500, "server_error", "api_error"),
        (502, "server_error", "api_error"),
        (503, "server_error", "overloaded_error"),
        (504, "server_error", "timeout_error"),
        (529, "server_error", "overloaded_error"),
    ],
)
def test_error_types_by_status(status: int, openai_type: str, anthropic_type: str) -> None:
    assert json.loads(error_body("openai", status, "x", "m", "r"))["error"]["type"] == openai_type
    assert json.loads(error_body("anthropic", status, "x", "m", "r"))["error"]["type"] == (
        anthropic_type
    )


async def test_the_openai_sdk_reads_code_and_type(upstream: Upstream) -> None:
    body = error_body("openai", 429, "llm_budget_exhausted", "the budget is spent", "req-31")
    upstream.then(reply(429, body, {"Content-Type": "application/json", "x-should-retry": "false"}))
    client = openai.AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key="sk-test")
    with pytest.raises(openai.RateLimitError) as raised:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.code == "llm_budget_exhausted"
    assert raised.value.type == "rate_limit_error"
    assert "req-31" in raised.value.message
    assert len(upstream.seen) == 1  # x-should-retry: false is obeyed
    await client.close()


async def test_the_anthropic_sdk_reads_type_and_error_code(upstream: Upstream) -> None:
    body = error_body("anthropic", 400, "llm_budget_exceeded", "over the call's cap", "req-32")
    upstream.then(reply(400, body))
    client = anthropic.AsyncAnthropic(base_url=upstream.url, api_key="sk-ant-test", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as raised:
        await client.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.type == "invalid_request_error"
    assert raised.value.error_code == "llm_budget_exceeded"
    assert "req-32" in str(raised.value)
    await client.close()


def _openai(message: str, type: str, code: str | None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type, "param": None, "code": code}}
    ).encode()


def _anthropic(type: str, message: str, error_code: str | None = None) -> bytes:
    error: dict[str, Any] = {"type": type, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return json.dumps(
        {"type": "error", "error": error, "request_id": "req_011CZ47RMLnx1JoJXRrzzSde"}
    ).encode()


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        # Both SDKs' retry rule: 408, 409, 429, >= 500.
        (429, _openai("Rate limit reached for gpt-4o", "requests", "rate_limit_exceeded"), "retry"),
        (429, _anthropic("rate_limit_error", "Number of request tokens has exceeded"), "retry"),
        (529, _anthropic("overloaded_error", "Overloaded"), "retry"),
        (500, _anthropic("api_error", "Internal server error"), "retry"),
        (503, b"<html>Service Unavailable</html>", "retry"),
        (502, b"", "retry"),
        (408, b"", "retry"),
        (409, _anthropic("conflict_error", "conflict"), "retry"),
        # Quota: moves on at once.
        (
            429,
            _openai(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            ),
            "quota",
        ),
        (
            400,
            _anthropic(
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API. Please go to"
                " Plans & Billing to upgrade or purchase credits.",
            ),
            "quota",
        ),
        (
            400,
            _anthropic(
                "invalid_request_error",
                "You have reached your specified API usage limits. You will regain access on"
                " 2026-04-01 at 00:00 UTC.",
            ),
            "quota",
        ),
        (
            429,
            _anthropic(
                "rate_limit_error", "Monthly spend limit reached", "enforced_spend_limit_reached"
            ),
            "quota",
        ),
        (402, _anthropic("billing_error", "There is an issue with your payment method"), "quota"),
        # Context length: another endpoint may have a larger window.
        (
            400,
            _openai(
                "This model's maximum context length is 128000 tokens. However, your messages"
                " resulted in 130512 tokens. Please reduce the length of the messages.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
            "next_endpoint",
        ),
        (
            400,
            _anthropic(
                "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"
            ),
            "next_endpoint",
        ),
        (
            400,
            _anthropic(
                "invalid_request_error",
                "input length and `max_tokens` exceed context limit: 197626 + 8192 > 200000,"
                " decrease input length or `max_tokens` and try again",
            ),
            "next_endpoint",
        ),
        # Final: the same call fails the same way anywhere.
        (400, _anthropic("invalid_request_error", "messages: roles must alternate"), "final"),
        (
            400,
            _openai(
                "Invalid 'user': string too long",
                "invalid_request_error",
                "string_above_max_length",
            ),
            "final",
        ),
        (
            401,
            _openai("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
            "final",
        ),
        (403, _anthropic("permission_error", "no access"), "final"),
        (404, _anthropic("not_found_error", "model: claude-x"), "final"),
        (413, _anthropic("request_too_large", "Request exceeds the maximum size"), "final"),
        (422, b"{}", "final"),
    ],
)
def test_classify_status(status: int, body: bytes, verdict: str) -> None:
    assert classify_status(status, body) == verdict


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        ({"type": "overloaded_error", "message": "Overloaded"}, "retry"),
        ({"type": "api_error", "message": "Internal server error"}, "retry"),
        ({"message": "The server had an error", "type": "server_error", "code": None}, "retry"),
        ({"type": "insufficient_quota", "code": "insufficient_quota", "message": "quota"}, "quota"),
        (
            {
                "type": "invalid_request_error",
                "message": "prompt is too long: 1 tokens > 0 maximum",
            },
            "next_endpoint",
        ),
        ({"type": "invalid_request_error", "message": "tools: bad schema"}, "final"),
        ({"type": "authentication_error", "message": "invalid x-api-key"}, "final"),
        # vLLM-style: the HTTP status in `code`.
        ({"object": "error", "message": "bad", "type": "BadRequestError", "code": 400}, "final"),
        ({"message": "busy", "type": "ServiceUnavailableError", "code": "503"}, "retry"),
        # Anything else before the first content: retry (SPEC §10).
        ({"message": "something odd"}, "retry"),
        ({}, "retry"),
    ],
)
def test_classify_event(error: dict[str, Any], verdict: str) -> None:
    assert classify_event(error) == verdict
