"""Failover across targets, directly, with scripted attempts per URL."""

from __future__ import annotations

import pytest

from sidecar.errors import CircuitOpen, GatewayTimeout, UpstreamFailure, UpstreamUnreachable
from sidecar.exchange import Exchange, Response, TargetOptions
from sidecar.policy import parse_policy
from sidecar.routing.routes import Endpoint, Route
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


def route_exchange(*targets: str) -> Exchange:
    """A route-mode exchange: the targets are a route's endpoints."""
    route = Route("pay", tuple(Endpoint(url) for url in targets))
    ex = exchange(*targets)
    ex.route = route
    ex.target_options = (TargetOptions(), TargetOptions(headers=(("x-backup", "1"),), timeout=2.0))
    return ex


async def test_a_route_served_by_a_later_endpoint_is_rescued_by_cascade_fallback() -> None:
    ex = route_exchange(PRIMARY, BACKUP)
    call_next = per_target({PRIMARY: 503, BACKUP: 200})
    response = await Cascade()(ex, call_next)
    assert response.status == 200
    assert ex.rescue == "cascade_fallback"
    assert ex.answered_by == BACKUP
    assert call_next.tried == [PRIMARY, BACKUP]


async def test_a_route_served_by_its_first_endpoint_is_no_rescue() -> None:
    ex = route_exchange(PRIMARY, BACKUP)
    response = await Cascade()(ex, per_target({PRIMARY: 200, BACKUP: 200}))
    assert response.status == 200 and ex.rescue is None


async def test_header_failover_is_still_called_failover() -> None:
    ex = exchange(PRIMARY, BACKUP)
    await Cascade()(ex, per_target({PRIMARY: "reset", BACKUP: 200}))
    assert ex.rescue == "failover"


async def test_each_attempt_sees_its_own_endpoints_options() -> None:
    ex = route_exchange(PRIMARY, BACKUP)
    seen: list[tuple[str, float, tuple[tuple[str, str], ...]]] = []

    async def call_next(current: Exchange) -> Response:
        seen.append((current.target, current.attempt_timeout, current.options.headers))
        return Response(503 if current.target == PRIMARY else 200, [])

    await Cascade()(ex, call_next)
    assert seen == [(PRIMARY, 30.0, ()), (BACKUP, 2.0, (("x-backup", "1"),))]
