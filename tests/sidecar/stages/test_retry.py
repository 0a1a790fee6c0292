"""The retry stage directly, with a fake clock: no sleeping through backoff."""

from __future__ import annotations

import asyncio
import email.utils

import pytest

from sidecar.errors import CircuitOpen, UpstreamFailure
from sidecar.exchange import Exchange, Response
from sidecar.outbound.retry_budget import RetryBudget
from sidecar.policy import RETRY_DELAY_CAP, parse_policy
from sidecar.stages.retry import OVER_BUDGET, Retry, backoff_delay, upstream_wait
from tests.support.clock import FakeClock


def exchange(headers: dict[str, str], started: float = 1000.0) -> Exchange:
    policy = parse_policy({k.lower(): v for k, v in headers.items()})
    return Exchange("POST", "/", "", [], b"", policy, "rid", target="http://u/", started=started)


def scripted(*outcomes: int | str):  # type: ignore[no-untyped-def]
    queue = list(outcomes)

    async def call_next(_: Exchange) -> Response:
        outcome = queue.pop(0)
        if isinstance(outcome, str):
            raise UpstreamFailure(outcome, "scripted")
        return Response(outcome, [])

    return call_next


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    assert backoff_delay(1, 0.2, 1.0) == pytest.approx(0.2)
    assert backoff_delay(3, 0.2, 1.0) == pytest.approx(0.8)
    assert backoff_delay(3, 0.2, 0.5) == pytest.approx(0.4)
    assert backoff_delay(3, 0.2, 0.0) == 0.0
    assert backoff_delay(40, 0.2, 1.0) == RETRY_DELAY_CAP


def test_upstream_wait_reads_all_three_headers() -> None:
    assert upstream_wait([("retry-after", "3")], 0) == 3
    assert upstream_wait([("retry-after-ms", "250")], 0) == 0.25
    assert upstream_wait([("x-ms-retry-after-ms", "1500")], 0) == 1.5
    date = email.utils.formatdate(1000 + 7, usegmt=True)
    assert upstream_wait([("retry-after", date)], 1000) == pytest.approx(7)
    assert upstream_wait([("retry-after", "soon")], 0) is None


async def test_waits_follow_the_backoff_formula() -> None:
    fake = FakeClock()
    ex = exchange({"X-Retry-Count": "3", "X-Retry-Delay": "100ms"})
    response = await Retry(fake.clock())(ex, scripted(503, 503, 503, 200))
    assert response.status == 200
    assert fake.slept == pytest.approx([0.1, 0.2, 0.4])
    assert ex.rescue == "retry"
    assert ex.attempts == 4


async def test_retry_after_longer_than_backoff_wins_but_is_capped() -> None:
    fake = FakeClock()

    async def call_next(_: Exchange) -> Response:
        if not fake.slept:
            return Response(429, [("retry-after", "120")])
        return Response(200, [])

    await Retry(fake.clock())(exchange({"X-Retry-Count": "1"}), call_next)
    assert fake.slept == [RETRY_DELAY_CAP]


async def test_wait_past_deadline_returns_last_answer() -> None:
    fake = FakeClock()
    ex = exchange({"X-Retry-Count": "5", "X-Deadline": "2s"})

    async def call_next(_: Exchange) -> Response:
        return Response(503, [("retry-after", "5")])

    response = await Retry(fake.clock())(ex, call_next)
    assert response.status == 503
    assert fake.slept == []


async def test_failures_retried_then_raised() -> None:
    fake = FakeClock()
    ex = exchange({"X-Retry-Count": "2", "X-Retry-Delay": "10ms"})
    with pytest.raises(UpstreamFailure):
        await Retry(fake.clock())(ex, scripted("reset", "connect-failure", "timeout"))
    assert [outcome for _, outcome, _ in ex.attempt_log] == ["reset", "connect-failure", "timeout"]


async def test_retry_on_excludes_unlisted_failures() -> None:
    fake = FakeClock()
    ex = exchange({"X-Retry-Count": "2", "X-Retry-On": "5xx"})
    with pytest.raises(UpstreamFailure):
        await Retry(fake.clock())(ex, scripted("reset", 200))
    assert ex.attempts == 1


@pytest.mark.parametrize(
    "status,retried",
    [(500, True), (501, False), (502, True), (429, True), (404, False), (409, False), (400, False)],
)
async def test_default_retryable_statuses(status: int, retried: bool) -> None:
    fake = FakeClock()
    ex = exchange({"X-Retry-Count": "1"})
    await Retry(fake.clock())(ex, scripted(status, 200))
    assert ex.attempts == (2 if retried else 1)


async def test_circuit_open_is_not_retried() -> None:
    fake = FakeClock()
    ex = exchange({"X-Retry-Count": "3"})
    calls = 0

    async def call_next(_: Exchange) -> Response:
        nonlocal calls
        calls += 1
        raise CircuitOpen("open", retry_after=5)

    with pytest.raises(CircuitOpen):
        await Retry(fake.clock())(ex, call_next)
    assert calls == 1
    assert fake.slept == []


def gated(first: int | str, gate: asyncio.Event, retrying: asyncio.Event):  # type: ignore[no-untyped-def]
    """First attempt: `first`; each later one waits for `gate`, then answers 200."""
    calls = 0

    async def call_next(_: Exchange) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            if isinstance(first, str):
                raise UpstreamFailure(first, "scripted")
            return Response(first, [])
        retrying.set()
        await gate.wait()
        return Response(200, [])

    return call_next


async def test_budget_refuses_a_retry_while_others_hold_every_slot() -> None:
    fake = FakeClock()
    budget = RetryBudget(ratio=0.0, minimum=1)
    retry = Retry(fake.clock(), budget)
    gate, a_retrying = asyncio.Event(), asyncio.Event()
    a = exchange({"X-Retry-Count": "3"})
    b = exchange({"X-Retry-Count": "3"})
    async with asyncio.TaskGroup() as group:
        first = group.create_task(retry(a, gated(503, gate, a_retrying)))
        await a_retrying.wait()
        assert budget.in_flight("u") == (1, 1)
        # b's 503 would be retried, but a's retry holds the only slot.
        answer = await retry(b, gated(503, gate, asyncio.Event()))
        assert answer.status == 503
        assert b.attempts == 1
        assert b.attempt_log == [("http://u/", f"503; {OVER_BUDGET}", 0.0)]
        gate.set()
    assert first.result().status == 200
    assert a.rescue == "retry"
    assert budget.in_flight("u") == (0, 0)


async def test_budget_refusal_raises_the_failure_as_it_came() -> None:
    fake = FakeClock()
    budget = RetryBudget(ratio=0.0, minimum=0)
    ex = exchange({"X-Retry-Count": "2"})
    with pytest.raises(UpstreamFailure) as raised:
        await Retry(fake.clock(), budget)(ex, scripted("reset", 200))
    assert raised.value.kind == "reset"
    assert ex.attempts == 1
    assert ex.attempt_log[-1][1] == f"reset; {OVER_BUDGET}"


async def test_requests_that_never_retry_still_widen_the_budget() -> None:
    fake = FakeClock()
    budget = RetryBudget(ratio=0.5, minimum=0)
    retry = Retry(fake.clock(), budget)
    gate, held = asyncio.Event(), asyncio.Event()

    async def slow_ok(_: Exchange) -> Response:
        held.set()
        await gate.wait()
        return Response(200, [])

    async with asyncio.TaskGroup() as group:
        group.create_task(retry(exchange({}), slow_ok))
        await held.wait()
        # Two requests in flight: 0.5 * 2 = 1 retry may run.
        answer = await retry(exchange({"X-Retry-Count": "1"}), scripted(503, 200))
        gate.set()
    assert answer.status == 200


async def test_cancelled_requests_give_back_their_budget() -> None:
    fake = FakeClock()
    budget = RetryBudget(ratio=0.0, minimum=1)
    gate, retrying = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(
        Retry(fake.clock(), budget)(exchange({"X-Retry-Count": "2"}), gated(503, gate, retrying))
    )
    await retrying.wait()
    assert budget.in_flight("u") == (1, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.in_flight("u") == (0, 0)


async def test_errors_from_inner_stages_give_back_their_budget() -> None:
    fake = FakeClock()
    budget = RetryBudget()
    await_count = 0

    async def call_next(_: Exchange) -> Response:
        nonlocal await_count
        await_count += 1
        if await_count == 1:
            return Response(503, [])
        raise CircuitOpen("open")

    with pytest.raises(CircuitOpen):
        await Retry(fake.clock(), budget)(exchange({"X-Retry-Count": "2"}), call_next)
    assert budget.in_flight("u") == (0, 0)
