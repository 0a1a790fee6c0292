"""The retry budget's arithmetic, per host (its effect on retries: test_retry.py)."""

from __future__ import annotations

import pytest

from sidecar.headers import upstream_host
from sidecar.outbound.retry_budget import RetryBudget


def test_minimum_applies_when_few_requests_are_in_flight() -> None:
    budget = RetryBudget(ratio=0.2, minimum=3)
    budget.request_started("h")
    assert budget.limit("h") == 3
    assert [budget.try_retry("h") for _ in range(4)] == [True, True, True, False]


def test_ratio_applies_when_many_requests_are_in_flight() -> None:
    budget = RetryBudget(ratio=0.2, minimum=3)
    for _ in range(50):
        budget.request_started("h")
    assert budget.limit("h") == pytest.approx(10)
    granted = sum(budget.try_retry("h") for _ in range(20))
    assert granted == 10
    assert budget.in_flight("h") == (50, 10)


def test_finished_retries_free_their_slot() -> None:
    budget = RetryBudget(ratio=0.0, minimum=1)
    budget.request_started("h")
    assert budget.try_retry("h")
    assert not budget.try_retry("h")
    budget.retry_finished("h")
    assert budget.try_retry("h")


def test_hosts_have_separate_budgets_and_idle_hosts_are_forgotten() -> None:
    budget = RetryBudget(ratio=0.0, minimum=1)
    budget.request_started("a")
    budget.request_started("b")
    assert budget.try_retry("a")
    assert budget.try_retry("b")
    budget.retry_finished("a")
    budget.request_finished("a")
    budget.retry_finished("b")
    budget.request_finished("b")
    assert budget.in_flight("a") == (0, 0)
    assert budget._requests == {} and budget._retries == {}


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryBudget(ratio=-0.1)


@pytest.mark.parametrize(
    "url,host",
    [
        ("https://API.example.com/v1/x?y=1", "api.example.com"),
        ("https://api.example.com:443/v1", "api.example.com"),
        ("http://api.example.com:80", "api.example.com"),
        ("http://api.example.com:8080/x", "api.example.com:8080"),
        ("https://user:pw@api.example.com/x", "api.example.com"),
        ("https://api.example.com?q=a/b", "api.example.com"),
        ("http://[::1]:9000/x", "[::1]:9000"),
    ],
)
def test_upstream_host(url: str, host: str) -> None:
    assert upstream_host(url) == host
