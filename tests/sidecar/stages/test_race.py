"""The race stage with the real cascade and retry inside, and scripted endpoints.

Each endpoint's behaviour is a coroutine: it may answer at once, fail, or
wait on an event the test controls (never a real sleep), and it records
whether it was cancelled and whether its answer was closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from sidecar.errors import CircuitOpen, GatewayTimeout, UpstreamFailure, UpstreamUnreachable
from sidecar.exchange import Exchange, Next, Response, TargetOptions
from sidecar.pipeline import build
from sidecar.policy import parse_policy
from sidecar.routing.routes import Endpoint, Route
from sidecar.stages.cascade import Cascade
from sidecar.stages.race import CANCELLED_OUTCOME, Race
from sidecar.stages.retry import Retry
from tests.support.clock import FakeClock

A, B, C = "https://a.test/x", "https://b.test/x", "https://c.test/x"


@dataclass
class Endpoints:
    """Scripted endpoints: what each does, and what happened to each."""

    behaviours: dict[str, Callable[[], Awaitable[int]]]
    calls: list[str] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)

    async def __call__(self, ex: Exchange) -> Response:
        url = ex.target
        self.calls.append(url)
        try:
            status = await self.behaviours[url]()
        except asyncio.CancelledError:
            self.cancelled.add(url)
            raise

        async def close() -> None:
            self.closed.add(url)

        return Response(status, [("x-from", url)], close=close)


def answer(
    status: int, after: asyncio.Event | None = None, after_ticks: int = 0
) -> Callable[[], Awaitable[int]]:
    """Answer `status` once `after` is set, or after `after_ticks` turns of the loop."""

    async def behave() -> int:
        if after is not None:
            await after.wait()
        for _ in range(after_ticks):
            await asyncio.sleep(0)
        return status

    return behave


def fail(kind: str) -> Callable[[], Awaitable[int]]:
    async def behave() -> int:
        raise UpstreamFailure(kind, "scripted")

    return behave


def never() -> Callable[[], Awaitable[int]]:
    return answer(200, asyncio.Event())


def race_exchange(
    *targets: str, method: str = "GET", race_writes: bool = False, **headers: str
) -> Exchange:
    route = Route(
        "llm", tuple(Endpoint(t) for t in targets), strategy="race", race_writes=race_writes
    )
    policy = parse_policy({k.replace("_", "-").lower(): v for k, v in headers.items()})
    return Exchange(
        method,
        "/",
        "",
        [],
        b"{}",
        policy,
        "rid",
        targets=targets,
        target_options=tuple(TargetOptions() for _ in targets),
        route=route,
    )


def chain(endpoints: Endpoints) -> Next:
    """Race, then the cascade and retry it wraps in the real pipeline."""
    return build([Race(), Cascade(), Retry(FakeClock().clock(draw=0.0))], endpoints)


async def test_the_fast_endpoint_wins_and_the_slow_one_is_cancelled() -> None:
    endpoints = Endpoints({A: never(), B: answer(200)})
    ex = race_exchange(A, B)

    response = await chain(endpoints)(ex)

    assert response.headers == [("x-from", B)]
    assert endpoints.cancelled == {A}
    assert ex.answered_by == B and ex.target == B
    assert ex.rescue is None  # a faster backup is the race working, not a rescue
    assert ex.attempts == 2
    assert (A, CANCELLED_OUTCOME, 0.0) in ex.attempt_log
    assert (B, "200", 0.0) in ex.attempt_log


async def test_a_winner_after_an_earlier_endpoint_failed_is_cascade_fallback() -> None:
    endpoints = Endpoints({A: fail("connect-failure"), B: answer(201, after_ticks=10)})
    ex = race_exchange(A, B)

    response = await chain(endpoints)(ex)

    assert response.status == 201
    assert ex.rescue == "cascade_fallback"
    assert ex.attempt_log[0] == (A, "connect-failure", 0.0)


async def test_two_answers_at_once_the_first_endpoint_wins_and_the_other_is_closed() -> None:
    endpoints = Endpoints({A: answer(200), B: answer(200)})
    ex = race_exchange(A, B)

    response = await chain(endpoints)(ex)

    assert response.headers == [("x-from", A)]
    assert endpoints.closed == {B}


async def test_a_retryable_answer_does_not_win_and_is_closed_when_another_does() -> None:
    endpoints = Endpoints({A: answer(503), B: answer(200, after_ticks=10)})
    ex = race_exchange(A, B)

    response = await chain(endpoints)(ex)

    assert response.status == 200 and response.headers == [("x-from", B)]
    assert endpoints.closed == {A}
    assert ex.rescue == "cascade_fallback"


async def test_a_write_races_only_when_the_route_allows_it() -> None:
    endpoints = Endpoints({A: answer(503), B: answer(200)})
    ex = race_exchange(A, B, method="POST")

    async def first_alone() -> int:
        assert B not in endpoints.calls, "the backup was called before the primary failed"
        return 503

    endpoints.behaviours[A] = first_alone
    response = await chain(endpoints)(ex)

    assert response.status == 200
    assert endpoints.calls == [A, B]
    assert ex.rescue == "cascade_fallback"

    racing = Endpoints({A: never(), B: answer(200)})
    response = await chain(racing)(race_exchange(A, B, method="POST", race_writes=True))
    assert response.status == 200 and racing.cancelled == {A}


async def test_every_endpoint_unreachable_is_502() -> None:
    endpoints = Endpoints({A: fail("connect-failure"), B: fail("timeout")})
    with pytest.raises(UpstreamUnreachable):
        await chain(endpoints)(race_exchange(A, B))


async def test_every_endpoint_timing_out_is_504() -> None:
    endpoints = Endpoints({A: fail("timeout"), B: fail("timeout")})
    ex = race_exchange(A, B)
    with pytest.raises(GatewayTimeout):
        await chain(endpoints)(ex)
    assert ex.attempts == 2


async def test_with_no_winner_an_upstream_answer_beats_a_sidecar_error() -> None:
    endpoints = Endpoints({A: answer(503), B: fail("reset"), C: answer(429)})
    ex = race_exchange(A, B, C)

    response = await chain(endpoints)(ex)

    assert response.status in (503, 429)
    other = A if response.headers == [("x-from", C)] else C
    assert endpoints.closed == {other}
    assert ex.rescue is None


async def test_every_circuit_open_is_circuit_open() -> None:
    async def open_circuit() -> int:
        raise CircuitOpen("open", retry_after=4)

    endpoints = Endpoints({A: open_circuit, B: open_circuit})
    with pytest.raises(CircuitOpen):
        await chain(endpoints)(race_exchange(A, B))


async def test_each_branch_retries_its_own_endpoint() -> None:
    tries = {A: 0}

    async def flaky() -> int:
        tries[A] += 1
        return 503 if tries[A] == 1 else 200

    endpoints = Endpoints({A: flaky, B: never()})
    ex = race_exchange(A, B, X_Retry_Count="2")

    response = await chain(endpoints)(ex)

    assert response.status == 200 and tries[A] == 2
    assert ex.rescue == "retry"
    assert endpoints.cancelled == {B}


async def test_a_cancelled_request_cancels_every_branch_and_leaves_no_task() -> None:
    endpoints = Endpoints({A: never(), B: never()})
    before = asyncio.all_tasks()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await chain(endpoints)(race_exchange(A, B))
    assert endpoints.cancelled == {A, B}
    assert asyncio.all_tasks() == before


async def test_a_single_endpoint_or_a_priority_route_does_not_race() -> None:
    endpoints = Endpoints({A: answer(503), B: answer(200)})
    ex = race_exchange(A, B)
    assert ex.route is not None
    ex.route = Route("p", ex.route.endpoints, strategy="priority")
    await chain(endpoints)(ex)
    assert endpoints.calls == [A, B]
