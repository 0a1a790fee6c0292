"""LLM errors both ways: the sidecar's own in the client's format, and the provider's classified.

`error_body` renders a sidecar-made error (a budget refusal, every endpoint
failed) the way the client's SDK expects it, so `openai.APIStatusError`
gets its `.code` and `.type`, and `anthropic.APIStatusError` its `.type`,
`.error_code` and request id.

`classify_status` / `classify_event` decide what a provider's failure means
for failover (SPEC §10, "Failover on LLM routes"). The shapes, as the
providers send them:

- Retryable statuses are the ones both official SDKs retry (their
  `_should_retry`: 408, 409, 429, >= 500), which covers Anthropic's 529
  `overloaded_error`.
- OpenAI quota: 429 `{"error": {"type": "insufficient_quota", "code":
  "insufficient_quota", "message": "You exceeded your current quota…"}}`;
  retrying it only fails again (langchainjs issue 1929 is the bug of
  treating it as a rate limit). `billing_hard_limit_reached` and
  `billing_not_active` are the same condition.
- Anthropic quota: 402 `billing_error`; 400 `invalid_request_error` "Your
  credit balance is too low to access the Anthropic API…" and "You have
  reached your specified API usage limits. You will regain access on …"
  (Anthropic's errors page: a 400 when usage reaches a spend limit you set);
  429 `rate_limit_error` with `error.details.error_code` =
  `enforced_spend_limit_reached` (the monthly tier cap, no `retry-after`);
  the other spend-limit `error_code`s the anthropic SDK types.
- Context length: OpenAI 400 `code: "context_length_exceeded"` ("This
  model's maximum context length is …"); Anthropic 400
  `invalid_request_error` "prompt is too long: 208310 tokens > 200000
  maximum" or "input length and `max_tokens` exceed context limit"; the
  OpenAI-compatible servers' wordings are the ones LiteLLM's
  `ExceptionCheckers.is_error_str_context_window_exceeded` lists
  (litellm/litellm_core_utils/exception_mapping_utils.py). Another endpoint
  may have a larger window, so these move on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson

from sidecar.llm.formats import Format

Verdict = Literal["retry", "next_endpoint", "quota", "final"]

# Anthropic's error types by status (its errors page; the SDK's ErrorType).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# OpenAI's: client mistakes are invalid_request_error, server faults server_error.
_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}

_QUOTA_CODES = frozenset(
    {
        # OpenAI (error.code / error.type)
        "insufficient_quota",
        "billing_hard_limit_reached",
        "billing_not_active",
        # Anthropic (error.type)
        "billing_error",
        # Anthropic (error.details.error_code), as the anthropic SDK types them
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
        "organization_on_hold",
    }
)
_QUOTA_MESSAGES = (
    "credit balance is too low",
    "reached your specified api usage limits",
    "exceeded your current quota",
)
_CONTEXT_CODES = frozenset({"context_length_exceeded", "context_window_exceeded"})
_CONTEXT_MESSAGES = (
    # Anthropic
    "prompt is too long",
    "exceed context limit",
    "input is too long for requested model",
    # OpenAI and the compatible servers (LiteLLM's list)
    "maximum context length",
    "model's maximum context limit",
    "is longer than the model's context length",
    "input tokens exceed the configured limit",
    "`inputs` tokens + `max_new_tokens` must be",
    "exceeds the available context size",
    "exceeds the maximum number of tokens allowed",
)
# Types of an in-band stream error that another attempt may not get.
_RETRY_TYPES = frozenset(
    {
        "overloaded_error",
        "api_error",
        "rate_limit_error",
        "timeout_error",
        "server_error",
        "rate_limit_exceeded",
        "requests",
        "tokens",
        "service_unavailable",
    }
)
_FINAL_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "invalid_api_key",
    }
)


def error_body(format: Format, status: int, code: str, message: str, request_id: str) -> bytes:
    """A sidecar-made error in the client's format, with the request id.

    OpenAI: `{"error": {"message", "type", "param": null, "code"}}`, the type
    OpenAI uses for that status (invalid_request_error for client mistakes,
    rate_limit_error for 429, server_error for 5xx). Anthropic: `{"type":
    "error", "error": {"type", "message", "details": {"error_code"}},
    "request_id"}` with Anthropic's type for the status; the anthropic SDK
    reads `details.error_code` as the error's `error_code`. Both put the
    request id in the message text too.
    """
    text = f"{message} (request id: {request_id})"
    if format == "openai":
        error = {"message": text, "type": openai_error_type(status), "param": None, "code": code}
        return orjson.dumps({"error": error})
    return orjson.dumps(
        {
            "type": "error",
            "error": {
                "type": anthropic_error_type(status),
                "message": text,
                "details": {"error_code": code},
            },
            "request_id": request_id,
        }
    )


def openai_error_type(status: int) -> str:
    """The `error.type` OpenAI gives an answer of this status."""
    if status >= 500:
        return "server_error"
    return _OPENAI_TYPES.get(status, "invalid_request_error")


def anthropic_error_type(status: int) -> str:
    """The `error.type` Anthropic gives an answer of this status."""
    known = _ANTHROPIC_TYPES.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def classify_status(status: int, body: bytes) -> Verdict:
    """What a provider's non-2xx answer means for the call: retry, move on, quota or final."""
    error = _error_object(body)
    if 400 <= status < 500:
        if status == 402 or _is_quota(error):
            return "quota"
        if status != 429 and _is_context_length(error):
            return "next_endpoint"
    if status in (408, 409, 429) or status >= 500:
        return "retry"
    return "final"


def classify_event(error: Mapping[str, Any]) -> Verdict:
    """What an in-band stream error (the `error` object of the event) means for the call.

    An error event before the first content is retryable (SPEC §10) unless
    it names a quota or context-length problem, or a client mistake another
    attempt would repeat (invalid_request_error, authentication_error, …).
    Some OpenAI-compatible servers put an HTTP status in `code`; it is
    classified as that status would be.
    """
    if _is_quota(error):
        return "quota"
    if _is_context_length(error):
        return "next_endpoint"
    code = error.get("code")
    status = _status_in(code)
    if status is not None:
        return classify_status(status, b"")
    kind = str(error.get("type") or "").lower()
    if kind in _RETRY_TYPES or str(code or "").lower() in _RETRY_TYPES:
        return "retry"
    if kind in _FINAL_TYPES or str(code or "").lower() in _FINAL_TYPES:
        return "final"
    return "retry"


def _error_object(body: bytes) -> Mapping[str, Any]:
    """The answer's error object (`error` of either format), or {} when there is none."""
    if not body:
        return {}
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"message": body[:2048].decode("utf-8", errors="replace")}
    if not isinstance(document, dict):
        return {}
    error = document.get("error")
    if isinstance(error, Mapping):
        return error
    if isinstance(error, str):
        return {"message": error}
    return document


def _is_quota(error: Mapping[str, Any]) -> bool:
    details = error.get("details")
    detail_code = details.get("error_code") if isinstance(details, Mapping) else None
    names = {str(error.get("code") or "").lower(), str(error.get("type") or "").lower()}
    if detail_code is not None:
        names.add(str(detail_code).lower())
    if names & _QUOTA_CODES:
        return True
    message = str(error.get("message") or "").lower()
    return any(phrase in message for phrase in _QUOTA_MESSAGES)


def _is_context_length(error: Mapping[str, Any]) -> bool:
    code = str(error.get("code") or "").lower()
    if code in _CONTEXT_CODES:
        return True
    message = str(error.get("message") or "").lower()
    # An over-long parameter string (OpenAI's `user`, max 64 characters) is not
    # the prompt being too long (LiteLLM's exclusion).
    if code == "string_above_max_length" or "string_above_max_length" in message:
        return False
    return any(phrase in message for phrase in _CONTEXT_MESSAGES)


def _status_in(code: object) -> int | None:
    if isinstance(code, bool):
        return None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and 100 <= code <= 599:
        return code
    return None
