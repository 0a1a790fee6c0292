"""Error bodies: Anthropic `{"type":"error","error":{"type","message"}}` <-> OpenAI
`{"error":{"message","type","param","code"}}`.

Both SDKs pick their exception class from the HTTP status, not from the body, so
the status stays what the upstream said; these functions only make the body
readable by the other SDK (its `.message`, `.type`, `.code`). Where a body says
nothing useful, the status decides the type. The message text is the upstream's
own: it describes the caller's request, never our secrets.
"""

from __future__ import annotations

from typing import Any

# Anthropic's documented error types by HTTP status.
_ANTHROPIC_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# Anthropic type -> OpenAI (type, code), written the way OpenAI itself answers:
# a bad key is an invalid_request_error with code invalid_api_key, a rate limit is
# type "requests" with code rate_limit_exceeded, an outage is a server_error.
_OPENAI_BY_ANTHROPIC_TYPE: dict[str, tuple[str, str | None]] = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("invalid_request_error", "invalid_api_key"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "permission_error": ("invalid_request_error", "permission_denied"),
    "not_found_error": ("invalid_request_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("requests", "rate_limit_exceeded"),
    "api_error": ("server_error", None),
    "timeout_error": ("server_error", "timeout"),
    "overloaded_error": ("server_error", "overloaded"),
}

# For an in-band stream error, which carries no status of its own.
_STATUS_BY_ANTHROPIC_TYPE = {kind: status for status, kind in _ANTHROPIC_TYPE_BY_STATUS.items()}

# OpenAI types and codes that name a kind more precisely than the status does.
_ANTHROPIC_BY_OPENAI_MARK = {
    "invalid_api_key": "authentication_error",
    "insufficient_quota": "billing_error",
    "rate_limit_exceeded": "rate_limit_error",
    "model_not_found": "not_found_error",
    "context_length_exceeded": "invalid_request_error",
}


def error_to_openai(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic error body (or anything error-like) in OpenAI's shape."""
    error = body.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    if not isinstance(kind, str) or kind not in _OPENAI_BY_ANTHROPIC_TYPE:
        kind = anthropic_error_type(status)
    openai_type, code = _OPENAI_BY_ANTHROPIC_TYPE[kind]
    return {
        "error": {
            "message": _message(body, status),
            "type": openai_type,
            "param": None,
            "code": code,
        }
    }


def error_to_anthropic(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI error body (or anything error-like) in Anthropic's shape."""
    error = body.get("error")
    kind = None
    if isinstance(error, dict):
        for mark in (error.get("code"), error.get("type")):
            if isinstance(mark, str) and mark in _ANTHROPIC_BY_OPENAI_MARK:
                kind = _ANTHROPIC_BY_OPENAI_MARK[mark]
                break
    return {
        "type": "error",
        "error": {"type": kind or anthropic_error_type(status), "message": _message(body, status)},
    }


def anthropic_error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status (unknown 4xx: invalid request, 5xx: api)."""
    if status in _ANTHROPIC_TYPE_BY_STATUS:
        return _ANTHROPIC_TYPE_BY_STATUS[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def status_for_anthropic_type(kind: str) -> int:
    """The HTTP status an Anthropic error type stands for (500 when unknown)."""
    return _STATUS_BY_ANTHROPIC_TYPE.get(kind, 500)


def status_for_openai_error(error: dict[str, Any]) -> int:
    """A best guess at the status an OpenAI in-band error stands for (500 when unknown)."""
    for mark in (error.get("code"), error.get("type")):
        if isinstance(mark, str) and mark in _ANTHROPIC_BY_OPENAI_MARK:
            return status_for_anthropic_type(_ANTHROPIC_BY_OPENAI_MARK[mark])
    if error.get("type") == "invalid_request_error":
        return 400
    return 500


def _message(body: dict[str, Any], status: int) -> str:
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    if isinstance(body.get("message"), str):
        return str(body["message"])
    return f"upstream answered HTTP {status}"
