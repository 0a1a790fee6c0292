"""The Respond stage's `x-should-retry: false` (SPEC §2.9), directly and through the chain."""

from __future__ import annotations

import pytest

from sidecar.errors import (
    BadHeader,
    CircuitOpen,
    EgressDenied,
    GatewayTimeout,
    IdempotencyConflict,
    MirApiError,
    PciCardNumber,
    RateLimited,
    StoreUnavailable,
    UpstreamUnreachable,
    error_headers,
)
from sidecar.exchange import Exchange, Response
from sidecar.policy import parse_policy
from sidecar.stages.respond import Respond


def exchange(headers: dict[str, str], *targets: str) -> Exchange:
    policy = parse_policy({k.lower(): v for k, v in headers.items()})
    return Exchange("POST", "/", "", [], b"", policy, "rid", targets=targets or ("http://u/",))


def answering(status: int, *headers: tuple[str, str]):  # type: ignore[no-untyped-def]
    async def call_next(_: Exchange) -> Response:
        return Response(status, list(headers))

    return call_next


def raising(error: MirApiError):  # type: ignore[no-untyped-def]
    async def call_next(_: Exchange) -> Response:
        raise error

    return call_next


def should_retry(headers: list[tuple[str, str]]) -> list[str]:
    values = [value for name, value in headers if name == "x-should-retry"]
    # stripe-python reads only its own spelling: it always says the same.
    assert [value for name, value in headers if name == "stripe-should-retry"] == values
    return values


async def test_an_upstream_failure_after_our_retries_says_do_not_retry() -> None:
    response = await Respond(1024)(
        exchange({"X-Retry-Count": "2"}),
        answering(503, ("x-should-retry", "true"), ("stripe-should-retry", "true")),
    )
    # The upstream's own "true" was about one attempt; ours covers all three.
    assert should_retry(response.headers) == ["false"]


async def test_an_upstream_failure_after_failover_says_do_not_retry() -> None:
    ex = exchange({}, "http://a/", "http://b/")
    response = await Respond(1024)(ex, answering(502))
    assert should_retry(response.headers) == ["false"]


async def test_without_a_retry_policy_of_ours_the_clients_retries_stay_as_they_were() -> None:
    response = await Respond(1024)(
        exchange({}),
        answering(503, ("x-should-retry", "true"), ("stripe-should-retry", "true")),
    )
    assert should_retry(response.headers) == ["true"]
    error = UpstreamUnreachable("refused")
    with pytest.raises(UpstreamUnreachable):
        await Respond(1024)(exchange({}), raising(error))
    assert should_retry(error_headers(error, "rid")) == []


async def test_a_success_never_carries_it() -> None:
    response = await Respond(1024)(exchange({"X-Retry-Count": "2"}), answering(200))
    assert should_retry(response.headers) == []


@pytest.mark.parametrize(
    "error", [UpstreamUnreachable("refused"), GatewayTimeout("slow")], ids=["502", "504"]
)
async def test_our_own_502_and_504_are_final_once_we_retried(error: MirApiError) -> None:
    with pytest.raises(MirApiError):
        await Respond(1024)(exchange({"X-Retry-Count": "1"}), raising(error))
    assert should_retry(error_headers(error, "rid")) == ["false"]


async def test_a_spent_deadline_is_final_even_without_retries() -> None:
    error = GatewayTimeout("deadline", code="deadline_exceeded")
    with pytest.raises(MirApiError):
        await Respond(1024)(exchange({}), raising(error))
    assert should_retry(error_headers(error, "rid")) == ["false"]


@pytest.mark.parametrize(
    "error",
    [
        BadHeader("X-Retry-Count", "lots"),
        PciCardNumber("the body at offset 3"),
        EgressDenied("private address"),
        CircuitOpen("open"),
        RateLimited("slow down"),
    ],
    ids=lambda error: error.code,
)
def test_a_policy_refusal_always_says_do_not_retry(error: MirApiError) -> None:
    assert should_retry(error_headers(error, "rid")) == ["false"]


@pytest.mark.parametrize(
    "error",
    [IdempotencyConflict("in flight", retry_after=1), StoreUnavailable("redis down")],
    ids=lambda error: error.code,
)
def test_an_answer_that_invites_a_retry_never_says_false(error: MirApiError) -> None:
    headers = error_headers(error, "rid")
    assert should_retry(headers) == []
    assert ("retry-after", "1") in headers
