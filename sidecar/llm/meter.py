"""What an LLM call may spend, and what it did spend (SPEC §10, "Budgets").

Before the call, `reserve` holds the worst case against every budget that
applies, in one atomic step of the store: the input estimate (no tokenizer:
see `formats.parse_request`) at the input price plus the call's
`max_tokens` (or the route's `llm_max_tokens`) at the output price, at the
dearest endpoint the call may reach. Concurrent calls, on one sidecar or
many, therefore never spend past a budget by more than their input
estimates' error. After the call, `settle` replaces the reservation with
the real cost from the provider's own usage, or releases it when nothing
was billed (an error, a cancelled call).

`X-LLM-Budget: 0.05` caps one call (it can only lower what stored budgets
allow); `; clamp` lowers `max_tokens` to fit the cap instead of refusing.

A model with no price (and no `[llm.prices]` override) has an unknown
cost: such a call is refused where any budget applies (`400
llm_price_unknown`) and otherwise goes through unmetered, its tokens still
counted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import partial
from typing import Any

from sidecar.clock import Clock
from sidecar.errors import (
    BadHeader,
    LlmBudgetExceeded,
    LlmBudgetExhausted,
    LlmPriceUnknown,
    StoreUnavailable,
)
from sidecar.exchange import Exchange, TargetOptions
from sidecar.llm.budgets import (
    CallBudget,
    nano_to_usd,
    parse_call_budget,
    scopes_for,
    seconds_to_rollover,
    usd_to_nano,
    utc_day,
)
from sidecar.llm.call import LlmCall, Reservation, model_at
from sidecar.llm.prices import PriceBook
from sidecar.routing.routes import DEFAULT_LLM_MAX_TOKENS
from sidecar.store.budgets import BudgetStore

log = logging.getLogger("mirapi.llm")

BUDGET_HEADER = "x-llm-budget"
#: A reservation outlives its call by this much at most (a sidecar that dies
#: mid-call must not hold budget for the rest of the day).
RESERVATION_SLACK = 600.0


class LlmMeter:
    """Reserves before an LLM call and settles after it, against the budget store."""

    def __init__(
        self,
        budgets: BudgetStore,
        prices: PriceBook,
        clock: Clock,
        budgeted: Callable[[], Mapping[str, object]] | None = None,
    ) -> None:
        self._budgets = budgets
        self._prices = prices
        self._clock = clock
        # The scopes that have a budget, kept fresh by the sidecar (a record
        # table, SPEC §11): a call under none of them is not reserved, so it
        # pays no store round trip before its first token. None: ask the store.
        self._budgeted = budgeted
        #: Settlements under way in the background (a stream's end), kept referenced.
        self._settling: set[asyncio.Task[None]] = set()
        self._warm = False

    async def reserve(self, exchange: Exchange) -> None:
        """Hold the call's worst case, or refuse it (429 / 400) before any upstream work."""
        call = exchange.llm
        assert call is not None
        if not self._warm:
            # The price data loads once (~0.4 s): off the event loop, and only
            # on a sidecar that sees LLM calls.
            await asyncio.to_thread(self._prices.warm)
            self._warm = True
        cap = _call_budget(exchange)
        route = exchange.route
        max_tokens = call.request.max_tokens or (
            route.llm_max_tokens if route is not None else DEFAULT_LLM_MAX_TOKENS
        )
        worst = self._worst_case(exchange, call, max_tokens)
        scopes = scopes_for(route.name if route is not None else None, exchange.client_id)
        now = self._clock.now()
        if worst is None:
            call.price_unknown = True
            call.metered = False
            if cap is not None or await self._any_budget(scopes):
                raise LlmPriceUnknown(
                    f"no price is known for model {call.request.model or '(none)'!r} and a"
                    " budget applies: add it under [llm.prices] in the config"
                )
            worst = Decimal(0)
        elif cap is not None and usd_to_nano(worst) > cap.limit_nano:
            max_tokens, worst = self._fit(exchange, call, cap, max_tokens, worst)
        # Never the request id: a client may send one twice (X-Request-ID).
        reservation = Reservation(os.urandom(12).hex(), scopes, utc_day(now))
        if not call.metered or (cap is None and not await self._any_budget(scopes)):
            # Nothing to hold: the spend is still recorded when it settles.
            call.reservation = reservation
            return
        lifetime = (exchange.policy.deadline or exchange.policy.timeout * 4) + RESERVATION_SLACK
        refusal = await self._budgets.reserve(
            scopes, usd_to_nano(worst), reservation.day, reservation.id, now + lifetime
        )
        if refusal is not None:
            spent = nano_to_usd(refusal.spent_nano + refusal.reserved_nano)
            raise LlmBudgetExhausted(
                f"the LLM budget of {refusal.scope} is spent for today"
                f" ({spent} of {nano_to_usd(refusal.limit_nano)} USD used or held);"
                " it renews at 00:00 UTC",
                retry_after=seconds_to_rollover(now),
            )
        call.reservation = reservation

    def _worst_case(self, exchange: Exchange, call: LlmCall, max_tokens: int) -> Decimal | None:
        """The dearest endpoint's worst case; None when any endpoint's price is unknown."""
        worst = Decimal(0)
        for url, options in _llm_targets(exchange):
            model = model_at(options, call.format, call.request.model)
            if options.free or model is None or options.provider is None:
                continue  # free, or skipped: the call has no model there
            price = self._priced(
                url, options.provider, partial(self._worst_at, model, call, max_tokens)
            )
            if price is None:
                return None
            worst = max(worst, price)
        return worst

    def _worst_at(
        self, model: str, call: LlmCall, max_tokens: int, provider: str
    ) -> Decimal | None:
        return self._prices.worst_case(provider, model, call.request.input_estimate, max_tokens)

    def price_id(self, url: str, provider: str) -> str:
        """Whose prices an endpoint's calls go by: Groq's for api.groq.com, say."""
        return self._prices.provider_for_url(url) or provider

    def _priced(
        self, url: str, provider: str, look_up: Callable[[str], Decimal | None]
    ) -> Decimal | None:
        """`look_up` under the endpoint's price id, then under its format's name."""
        price_id = self.price_id(url, provider)
        found = look_up(price_id)
        if found is None and price_id != provider:
            found = look_up(provider)
        return found

    def _fit(
        self, exchange: Exchange, call: LlmCall, cap: CallBudget, max_tokens: int, worst: Decimal
    ) -> tuple[int, Decimal]:
        """Lower max_tokens until the worst case fits `cap` (clamp), or refuse."""
        limit = nano_to_usd(cap.limit_nano)
        if cap.clamp:
            # Worst case is linear in max_tokens: one division finds the most that fits.
            floor = self._worst_case(exchange, call, 0) or Decimal(0)
            per_token = (worst - floor) / max_tokens
            fitting = min(max_tokens, tokens_that_fit(limit, floor, per_token))
            if fitting >= 1:
                call.max_tokens = fitting
                refit = self._worst_case(exchange, call, fitting)
                return fitting, refit if refit is not None else worst
        raise LlmBudgetExceeded(
            f"the call's worst case ({_usd(worst)} USD: its input and max_tokens={max_tokens})"
            f" is over its X-LLM-Budget of {_usd(limit)} USD"
            + ("" if cap.clamp else "; add '; clamp' to lower max_tokens instead")
        )

    def budgeted_scopes(self) -> Mapping[str, object]:
        """The scopes this sidecar knows to have a budget (empty without a table)."""
        return self._budgeted() if self._budgeted is not None else {}

    async def _any_budget(self, scopes: tuple[str, ...]) -> bool:
        """Whether a stored budget applies to any of `scopes`."""
        if self._budgeted is not None:
            budgeted = self._budgeted()
            return any(scope in budgeted for scope in scopes)
        budgets = await self._budgets.list_budgets()
        return any(budget.scope in scopes for budget in budgets)

    def summarize(self, exchange: Exchange) -> dict[str, Any]:
        """The call's figures (cost computed now), as the stream's closing comment shows them."""
        call = exchange.llm
        assert call is not None
        if call.usage is not None and call.cost is None and not call.price_unknown:
            call.cost = self._cost(exchange, call)
        usage = call.usage.as_dict() if call.usage is not None else None
        return {
            "provider": call.provider,
            "model": call.model,
            "usage": usage,
            "cost_usd": float(call.cost) if call.cost is not None else None,
        }

    def _cost(self, exchange: Exchange, call: LlmCall) -> Decimal | None:
        assert call.usage is not None
        if call.free:
            return Decimal(0)
        provider, model, usage = call.provider, call.model, call.usage
        if provider is None or model is None:
            call.price_unknown = True
            return None
        cost = self._priced(
            exchange.answered_by or exchange.target,
            provider,
            lambda price_id: self._prices.cost(price_id, model, usage),
        )
        if cost is None:
            call.price_unknown = True
        return cost

    async def settle(self, exchange: Exchange) -> None:
        """Replace the reservation by the real cost, or release it; once per call."""
        call = exchange.llm
        if call is None or call.settled or call.reservation is None:
            return
        call.settled = True
        reservation = call.reservation
        try:
            if call.usage is None:
                await self._budgets.release(reservation.id)
                return
            self.summarize(exchange)
            await self._budgets.settle(
                reservation.id,
                reservation.scopes,
                reservation.day,
                usd_to_nano(call.cost) if call.cost is not None else 0,
                call.usage.input,
                call.usage.output,
            )
        except StoreUnavailable:
            # The reservation expires on its own; the spend is lost, never the answer.
            log.warning(
                "LLM spend of request %s not recorded: the store did not answer",
                exchange.request_id,
            )

    def settle_soon(self, exchange: Exchange) -> None:
        """Settle in the background: a stream's end, or a cancelled call, cannot wait."""
        task = asyncio.get_running_loop().create_task(self.settle(exchange))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def drain(self) -> None:
        """Wait for background settlements (shut-down, tests)."""
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)


def _llm_targets(exchange: Exchange) -> list[tuple[str, TargetOptions]]:
    """The endpoints an LLM call may reach, by URL: those that name a provider."""
    return [
        (url, options)
        for url, options in zip(exchange.targets, exchange.target_options, strict=False)
        if options.provider is not None
    ]


def _call_budget(exchange: Exchange) -> CallBudget | None:
    raw = exchange.header(BUDGET_HEADER)
    if raw is None:
        return None
    try:
        return parse_call_budget(raw)
    except ValueError as error:
        raise BadHeader("X-LLM-Budget", str(error)) from None


def _usd(amount: Decimal) -> str:
    """USD for a message: enough places to see a fraction of a cent."""
    return f"{amount:.6f}".rstrip("0").rstrip(".") if amount else "0"


def tokens_that_fit(limit: Decimal, floor: Decimal, per_token: Decimal) -> int:
    """How many output tokens fit `limit` after `floor` at `per_token` each."""
    if per_token <= 0:
        return 0
    return max(0, math.floor((limit - floor) / per_token))
