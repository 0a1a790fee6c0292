"""The retry stage directly, with a fake clock: no sleeping through backoff."""

from __future__ import annotations

import email.utils

import pytest

from sidecar.errors import UpstreamFailure
from sidecar.exchange import Exchange, Response
from sidecar.policy import RETRY_DELAY_CAP, parse_policy
from sidecar.stages.retry import Retry, backoff_delay, upstream_wait
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
