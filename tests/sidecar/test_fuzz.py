"""Property-based fuzzing of the sidecar's door (issue 14, SPEC §2 "Bad header values").

In process over ASGI, a few hundred requests of any shape (tests/support/fuzz.py):
never a 500, never a traceback in the log, never a call to a host the request
did not name. `bench/fuzz.py` runs the same strategies for 10,000+ examples.
A short pass over raw sockets through real Hypercorn checks what its parser
lets through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.fuzz import Case, Harness, cases

#: The CI share: enough to catch a regression in the door, well under 30 s.
CI_EXAMPLES = 300


@pytest.fixture(scope="module")
def harness() -> Iterator[tuple[asyncio.AbstractEventLoop, Harness]]:
    loop = asyncio.new_event_loop()
    fuzz = Harness()
    loop.run_until_complete(fuzz.start())
    try:
        yield loop, fuzz
    finally:
        loop.run_until_complete(fuzz.stop())
        loop.close()


@settings(
    max_examples=CI_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
def test_no_input_gets_a_500_a_traceback_or_another_host(
    harness: tuple[asyncio.AbstractEventLoop, Harness], case: Case
) -> None:
    loop, fuzz = harness
    verdict = loop.run_until_complete(fuzz.run(case))
    assert verdict.problems == [], case
