"""The race strategy: every endpoint at once, the first success wins (SPEC §4).

For a route with `strategy = "race"`, each endpoint gets a branch: a copy of
the exchange (`dataclasses.replace`) with that endpoint as its only target,
run through the rest of the chain (a one-target cascade, then retry,
breaker, strip, forward), so each endpoint keeps its own retries and
breaker. The first branch to answer with a status the policy would not
retry (`X-Retry-On`: not 5xx, 429, ...) wins; every other branch is
cancelled at once, which closes its upstream connection, and an answer a
loser got anyway is discarded unread. Nothing a loser did reaches the
client; its attempts still appear in the attempt log and count in
`X-MirApi-Attempts`. The stages outside (idempotency, smart cache) see only
the winner's answer.

Choices worth knowing:

- A non-idempotent method (POST, PATCH, ...) races only when the route says
  `race_writes = true`, since every endpoint receives it; otherwise the
  endpoints are tried one after another, as with `priority`.
- When no branch wins, an upstream's answer (the last retryable one to
  arrive: a 503, a 429) beats an error of the sidecar's own; a sidecar error
  that is not about reaching the upstream (egress denied, say) is answered
  before 502/504, since it tells what to fix; an open circuit everywhere is
  `503 circuit_open`; otherwise `504 upstream_timeout` when every attempt
  timed out, else `502 upstream_unreachable` (as cascade decides).
- `X-Rescued: cascade_fallback` only when the winner is not the first
  endpoint *and* an endpoint listed before it had already failed when the
  winner answered: a faster backup beating a healthy primary is the race
  working, not a rescue. Otherwise the winner's own rescue (`retry`) stands.
- Cancelled branches are awaited before the answer goes on (shielded, so a
  cancelled request still cleans up): no task or connection outlives it.
"""

from __future__ import annotations

import asyncio
import dataclasses

from sidecar.errors import CircuitOpen, GatewayTimeout, UpstreamUnreachable
from sidecar.exchange import CIRCUIT_OPEN_OUTCOME, Exchange, Next, Response
from sidecar.headers import IDEMPOTENT_METHODS

Outcome = Response | BaseException

#: The attempt log's outcome for a losing branch's attempt, cut short.
CANCELLED_OUTCOME = "cancelled"

#: Clean-ups under way, referenced so that a cancelled caller cannot lose one.
_SETTLING: set[asyncio.Task[None]] = set()


def races(exchange: Exchange) -> bool:
    """True when this request goes to every endpoint of its route at once."""
    route = exchange.route
    if route is None or route.strategy != "race" or len(exchange.targets) < 2:
        return False
    return exchange.method in IDEMPOTENT_METHODS or route.race_writes


def branch(exchange: Exchange, index: int) -> Exchange:
    """A copy of `exchange` aimed at endpoint `index` alone, with its own log."""
    return dataclasses.replace(
        exchange,
        targets=exchange.targets[index : index + 1],
        target_options=exchange.target_options[index : index + 1],
        target="",
        target_index=0,
        attempts=0,
        rescue=None,
        answered_by="",
        attempt_log=[],
        # Each branch learns its own LLM answer; the winner's becomes the call's.
        llm=dataclasses.replace(exchange.llm) if exchange.llm is not None else None,
    )


class Race:
    """Runs a race route's endpoints at once; anything else passes on to the cascade."""

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        if not races(exchange):
            return await call_next(exchange)
        return await _Run(exchange, call_next).result()


class _Run:
    """One race: the branches, their outcomes as they arrive, and the winner."""

    def __init__(self, exchange: Exchange, call_next: Next) -> None:
        self.exchange = exchange
        self.branches = [branch(exchange, i) for i in range(len(exchange.targets))]
        self.outcomes: dict[int, Outcome] = {}
        #: Endpoints that failed (an error or a retryable answer), in arrival order.
        self.failed: list[int] = []
        self.winner: int | None = None
        loop = asyncio.get_running_loop()
        self.tasks: dict[asyncio.Task[Response], int] = {
            loop.create_task(_run_branch(call_next, b)): i for i, b in enumerate(self.branches)
        }

    async def result(self) -> Response:
        pending = set(self.tasks)
        decided = False
        try:
            while pending and self.winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=self.tasks.__getitem__):
                    self._arrived(self.tasks[task], _outcome(task))
            decided = True
        finally:
            await self._cancel(pending)
            for part in self.branches:
                self.exchange.attempts += part.attempts
                self.exchange.attempt_log.extend(part.attempt_log)
            if not decided:
                # The request itself was cancelled: nobody reads these answers.
                await self._discard_all_but(None)
        if self.winner is not None:
            return await self._won(self.winner)
        return await self._all_failed()

    def _arrived(self, index: int, outcome: Outcome) -> None:
        self.outcomes[index] = outcome
        if self.winner is not None:
            return
        retry_on = self.exchange.policy.retry_on
        if isinstance(outcome, Response) and not retry_on.status_is_retryable(outcome.status):
            self.winner = index
        else:
            self.failed.append(index)

    async def _cancel(self, losers: set[asyncio.Task[Response]]) -> None:
        """Cancel the branches still running and wait until they have unwound.

        Shielded: when the request itself is cancelled (its deadline, the
        client gone), the clean-up still runs to the end.
        """
        if not losers:
            return
        for task in losers:
            task.cancel()
        cleanup = asyncio.get_running_loop().create_task(_discard_late(losers))
        _SETTLING.add(cleanup)
        cleanup.add_done_callback(_SETTLING.discard)
        await asyncio.shield(cleanup)
        for task in losers:
            part = self.branches[self.tasks[task]]
            if part.attempts and task.cancelled():
                part.aim(0)
                part.note_attempt(CANCELLED_OUTCOME, 0.0)

    async def _won(self, index: int) -> Response:
        await self._discard_all_but(index)
        winner = self.branches[index]
        self.exchange.aim(index)
        self.exchange.llm = winner.llm
        self.exchange.answered_by = winner.answered_by or winner.target
        self.exchange.rescue = winner.rescue
        response = _response(self.outcomes[index])
        earlier_failed = any(i < index for i in self.failed)
        if index > 0 and earlier_failed and response.status < 400:
            self.exchange.rescue = self.exchange.fallback_rescue()
        return response

    async def _all_failed(self) -> Response:
        answered = [i for i in self.failed if isinstance(self.outcomes[i], Response)]
        if not answered:
            outcomes = (self.outcomes[i] for i in sorted(self.outcomes))
            raise self._error([o for o in outcomes if isinstance(o, BaseException)])
        chosen = answered[-1]
        await self._discard_all_but(chosen)
        self.exchange.aim(chosen)
        self.exchange.llm = self.branches[chosen].llm
        self.exchange.answered_by = self.exchange.target
        return _response(self.outcomes[chosen])

    async def _discard_all_but(self, keep: int | None) -> None:
        for index, outcome in self.outcomes.items():
            if index != keep and isinstance(outcome, Response):
                await outcome.discard()

    def _error(self, errors: list[BaseException]) -> BaseException:
        """The one error to answer when every branch failed without an answer."""
        for error in errors:
            if not isinstance(error, UpstreamUnreachable | GatewayTimeout | CircuitOpen):
                return error
        opened = [e for e in errors if isinstance(e, CircuitOpen)]
        if len(opened) == len(errors):
            return min(opened, key=lambda e: e.retry_after or 0)
        # As cascade decides: 504 only when every attempt made timed out.
        kinds = {outcome.partition(";")[0] for _, outcome, _ in self.exchange.attempt_log}
        kinds.discard(CIRCUIT_OPEN_OUTCOME)
        wanted = GatewayTimeout if kinds <= {"timeout"} else UpstreamUnreachable
        for error in errors:
            if isinstance(error, wanted):
                return error
        return wanted("no endpoint of the route answered")


async def _run_branch(call_next: Next, part: Exchange) -> Response:
    return await call_next(part)


def _outcome(task: asyncio.Task[Response]) -> Outcome:
    if task.cancelled():
        return asyncio.CancelledError()
    error = task.exception()
    return error if error is not None else task.result()


def _response(outcome: Outcome) -> Response:
    assert isinstance(outcome, Response)
    return outcome


async def _discard_late(tasks: set[asyncio.Task[Response]]) -> None:
    """Wait for cancelled branches; an answer one got anyway is freed unread."""
    await asyncio.wait(tasks)
    for task in tasks:
        outcome = _outcome(task)
        if isinstance(outcome, Response):
            await outcome.discard()
