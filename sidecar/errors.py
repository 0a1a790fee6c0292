"""The sidecar's own errors: one tree, one renderer.

    MirApiError (status, code, safe message, optional Retry-After)
    ├── BadRequest                400 (any client mistake)
    │   ├── NoTarget              400 no_target
    │   ├── BadHeader             400 bad_header        names the header
    │   ├── BadRequestFraming     400 bad_request       CL + TE, malformed body
    │   ├── PciCardNumber         400 pci_card_number   offset only, never digits
    │   ├── LlmBudgetExceeded     400 llm_budget_exceeded   worst case over X-LLM-Budget
    │   └── LlmPriceUnknown       400 llm_price_unknown     a budget applies, no price
    ├── Unauthorized              401 unauthorized
    │   └── SecretLocked          401 secret_locked     no or a wrong passphrase for a secret
    ├── EgressDenied              403 egress_denied
    ├── HostNotAllowed            403 host_not_allowed  DNS rebinding guard
    ├── CrossSiteRead             403 cross_site_refused a dashboard feed read from another origin
    ├── NotFound                  404 route_not_found / job_not_found / not_found
    ├── MethodNotAllowed          405 method_not_allowed a control endpoint's wrong method
    ├── PayloadTooLarge           413 payload_too_large
    ├── IdempotencyConflict       409 idempotency_in_flight (Retry-After: 1)
    ├── IdempotencyKeyReused      422 idempotency_key_reused
    ├── RateLimited               429 rate_limited       (Retry-After)
    ├── LlmBudgetExhausted        429 llm_budget_exhausted (Retry-After: to 00:00 UTC)
    ├── UpstreamUnreachable       502 upstream_unreachable
    ├── ServiceUnavailable        503 (Retry-After)
    │   ├── CircuitOpen           503 circuit_open      no upstream call made
    │   ├── VaultBusy             503 vault_busy        too many key derivations at once
    │   └── StoreUnavailable      503 store_unavailable the store did not answer
    ├── GatewayTimeout            504 upstream_timeout / deadline_exceeded
    └── RouteInvalid              500 route_invalid     a stored route is unusable

Every error carries a message that is safe to show and to log: it never holds
a body, a credential or a card number. Stages raise these; only `render_error`
turns them into the JSON body of SPEC §2.
"""

from __future__ import annotations

import email.utils
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from sidecar.exchange import Response


class MirApiError(Exception):
    """Base of every error the sidecar answers by itself."""

    status: int = 500
    code: str = "internal_error"
    #: The sidecar is final about this answer: a client retrying it gains nothing
    #: (a policy refused the call, or the sidecar's own retries are spent). Sent
    #: as `x-should-retry: false` (SPEC §2.9), which the official OpenAI and
    #: Anthropic SDKs obey, so an app's client does not multiply our retries.
    final: bool = True

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after
        #: Sent with the error answer (lower-case names), e.g. RateLimit-* on a 429.
        self.headers = headers
        # 429 and 503 always tell the client when to come back (SPEC §2.9).
        if self.retry_after is None and self.status in (429, 503):
            self.retry_after = 1


class BadRequest(MirApiError):
    status = 400
    code = "bad_request"


class NoTarget(BadRequest):
    code = "no_target"

    def __init__(self) -> None:
        super().__init__(
            "no upstream given: send X-Target-URL, X-Route-Key, or use /r/NAME/ path mode"
        )


class BadHeader(BadRequest):
    """A request header with a value the sidecar cannot use."""

    code = "bad_header"

    def __init__(self, header: str, reason: str) -> None:
        super().__init__(f"{header}: {reason}")
        self.header = header
        self.reason = reason


class BadRequestFraming(BadRequest):
    """A body framed two ways (Content-Length and Transfer-Encoding): answered, then closed."""


class PciCardNumber(BadRequest):
    code = "pci_card_number"


class LlmBudgetExceeded(BadRequest):
    code = "llm_budget_exceeded"


class LlmPriceUnknown(BadRequest):
    code = "llm_price_unknown"


class Unauthorized(MirApiError):
    status = 401
    code = "unauthorized"


class SecretLocked(Unauthorized):
    """A secret is needed but no passphrase, or a wrong one, was given; never echoes it."""

    code = "secret_locked"


class EgressDenied(MirApiError):
    status = 403
    code = "egress_denied"


class HostNotAllowed(MirApiError):
    """The request's Host is neither a loopback name, an address, nor a server_names entry."""

    status = 403
    code = "host_not_allowed"


class CrossSiteRead(MirApiError):
    """A dashboard feed asked for from another origin (no permissive CORS)."""

    status = 403
    code = "cross_site_refused"


class MethodNotAllowed(MirApiError):
    """A method other than the one a control endpoint takes."""

    status = 405
    code = "method_not_allowed"


class NotFound(MirApiError):
    status = 404
    code = "not_found"


class IdempotencyConflict(MirApiError):
    status = 409
    code = "idempotency_in_flight"
    final = False  # come back after Retry-After: the first call's answer will be there


class PayloadTooLarge(MirApiError):
    status = 413
    code = "payload_too_large"


class IdempotencyKeyReused(MirApiError):
    status = 422
    code = "idempotency_key_reused"


class RateLimited(MirApiError):
    status = 429
    code = "rate_limited"


class LlmBudgetExhausted(MirApiError):
    """A budget that applies to the call has no room left today (SPEC §10)."""

    status = 429
    code = "llm_budget_exhausted"


class UpstreamUnreachable(MirApiError):
    status = 502
    code = "upstream_unreachable"
    final = False  # unless the sidecar retried or failed over (stages/respond.py)


class ServiceUnavailable(MirApiError):
    status = 503
    code = "service_unavailable"


class CircuitOpen(ServiceUnavailable):
    """The upstream host's breaker is open: the attempt was not made."""

    code = "circuit_open"


class VaultBusy(ServiceUnavailable):
    """Too many passphrase derivations queued: fail fast rather than burn the CPU."""

    code = "vault_busy"
    final = False


class StoreUnavailable(ServiceUnavailable):
    """The store (Redis, SQLite) did not answer; raised only by store backends."""

    code = "store_unavailable"
    final = False


class GatewayTimeout(MirApiError):
    status = 504
    code = "upstream_timeout"
    final = False  # unless retried, failed over or past X-Deadline (stages/respond.py)


class RouteInvalid(MirApiError):
    """A stored route the sidecar cannot use: its configuration, not the request."""

    status = 500
    code = "route_invalid"


#: What SDKs read to skip their own retries: the OpenAI and Anthropic ones (and
#: every SDK generated the same way) read the first, stripe-python the second.
SHOULD_NOT_RETRY = (("x-should-retry", "false"), ("stripe-should-retry", "false"))
SHOULD_RETRY_NAMES = frozenset(name for name, _ in SHOULD_NOT_RETRY)


def error_body(error: MirApiError, request_id: str) -> bytes:
    """The JSON body of SPEC §2: {"error": {"code", "message", "request_id"}}."""
    return orjson.dumps(
        {"error": {"code": error.code, "message": error.message, "request_id": request_id}}
    )


def error_headers(error: MirApiError, request_id: str) -> list[tuple[str, str]]:
    """Headers for an error answer; Retry-After on every 429/503 the sidecar sends."""
    headers = [
        ("content-type", "application/json"),
        ("date", email.utils.formatdate(usegmt=True)),
        ("x-request-id", request_id),
    ]
    if error.retry_after is not None:
        headers.append(("retry-after", str(error.retry_after)))
    if error.final:
        headers.extend(SHOULD_NOT_RETRY)
    headers.extend(error.headers)
    return headers


class UpstreamFailure(Exception):
    """An attempt that got no response at all (not an answer to the client).

    `kind` uses Envoy's retry-on words: `connect-failure`, `reset` or
    `timeout`. The retry and cascade stages decide what it becomes; when
    nothing rescues it, `as_error` gives the 502 or 504 the client sees.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail

    #: Counted by the circuit breaker as the host failing (an LLM context-length
    #: refusal is the request's doing, not the host's).
    counts_against_host: bool = True
    #: Opens the host's breaker at once (an LLM quota error: no retry will help).
    opens_breaker: bool = False

    def as_error(self) -> MirApiError:
        """The sidecar's answer when this was the last attempt."""
        if self.kind == "timeout":
            return GatewayTimeout(f"the upstream did not answer in time ({self.detail})")
        return UpstreamUnreachable(f"the upstream could not be reached ({self.detail})")


class EndpointRefused(UpstreamFailure):
    """An endpoint's answer that moves the call on without a retry there (SPEC §10).

    An LLM quota error (`llm-quota`, which also opens the host's breaker) or
    a context-length refusal (`llm-next-endpoint`, not the host's fault), or
    an endpoint that cannot take the call at all (`llm-skipped`, no
    `answer`). Neither kind is in any X-Retry-On, so the retry stage hands it
    straight to the cascade, which tries the next endpoint; when none is
    left, the client gets `answer`, the upstream's own words.
    """

    def __init__(
        self,
        kind: str,
        detail: str,
        answer: Response | None = None,
        *,
        opens_breaker: bool = False,
        counts_against_host: bool = True,
    ) -> None:
        super().__init__(kind, detail)
        self.answer = answer
        self.opens_breaker = opens_breaker
        self.counts_against_host = counts_against_host
