"""Failover across targets, directly, with scripted attempts per URL."""

from __future__ import annotations

import pytest

from sidecar.errors import CircuitOpen, GatewayTimeout, UpstreamFailure, UpstreamUnreachable
from sidecar.exchange import Exchange, Response
from sidecar.policy import parse_policy
from sidecar.stages.cascade import Cascade

PRIMARY, BACKUP = "https://primary.test/x", "https://backup.test/x"


def exchange(*targets: str) -> Exchange:
    return Exchange("GET", "/", "", [], b"", parse_policy({}), "rid", targets=targets)


def per_target(outcomes: dict[str, int | str | Exception]):  # type: ignore[no-untyped-def]
    """Each URL's outcome: a status, an UpstreamFailure kind, or an error to raise."""
    tried: list[str] = []

    async def call_next(ex: Exchange) -> Response:
        tried.append(ex.target)
        outcome = outcomes[ex.target]
        if isinstance(outcome, Exception):
            ex.note_attempt("circuit_open", 0.0)
            raise outcome
        if isinstance(outcome, str):
            ex.note_attempt(outcome, 0.0)
            raise UpstreamFailure(outcome, "scripted")
        return Response(outcome, [])

    call_next.tried = tried  # type: ignore[attr-defined]
    return call_next


async def test_an_open_circuit_fails_over_to_the_next_target() -> None:
    ex = exchange(PRIMARY, BACKUP)
    call_next = per_target({PRIMARY: CircuitOpen("open"), BACKUP: 200})
    response = await Cascade()(ex, call_next)
    assert response.status == 200
    assert ex.rescue == "failover"
    assert ex.answered_by == BACKUP


async def test_an_open_circuit_on_the_last_target_propagates() -> None:
    ex = exchange(PRIMARY, BACKUP)
    call_next = per_target({PRIMARY: "connect-failure", BACKUP: CircuitOpen("open", retry_after=7)})
    with pytest.raises(CircuitOpen) as raised:
        await Cascade()(ex, call_next)
    assert raised.value.retry_after == 7
    assert call_next.tried == [PRIMARY, BACKUP]


async def test_skipped_open_circuits_do_not_hide_that_every_attempt_timed_out() -> None:
    ex = exchange(PRIMARY, BACKUP)
    with pytest.raises(GatewayTimeout):
        await Cascade()(ex, per_target({PRIMARY: CircuitOpen("open"), BACKUP: "timeout"}))


async def test_a_budget_note_keeps_the_failure_kind() -> None:
    ex = exchange(PRIMARY)
    ex.attempt_log.append((PRIMARY, "timeout; over retry budget", 0.0))

    async def call_next(_: Exchange) -> Response:
        raise UpstreamFailure("timeout", "scripted")

    with pytest.raises(GatewayTimeout):
        await Cascade()(ex, call_next)


async def test_mixed_failures_are_unreachable() -> None:
    ex = exchange(PRIMARY, BACKUP)
    with pytest.raises(UpstreamUnreachable):
        await Cascade()(ex, per_target({PRIMARY: "timeout", BACKUP: "reset"}))
