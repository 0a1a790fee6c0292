"""An LLM call's budget and figures, once per call (SPEC §10).

Before any upstream work the call's worst case is reserved against every
budget that applies (`LlmMeter.reserve`: 429 llm_budget_exhausted, 400
llm_budget_exceeded or llm_price_unknown when it cannot be); after the
answer, the reservation is settled to the real cost and the answer carries
`X-LLM-Provider`, `X-LLM-Model`, `X-LLM-Usage` and `X-LLM-Cost`. A stream's
figures are known only at its end: its head carries the provider and the
model, its closing comment the rest (llm_attempt), and its end settles.

It sits outside the deadline, failover and retries: one reservation covers
every attempt the call makes, whichever endpoint answers.
"""

from __future__ import annotations

from sidecar.exchange import Exchange, Next, Response
from sidecar.llm.meter import LlmMeter
from sidecar.llm.prices import format_usd


class LlmBudget:
    """Reserves before an LLM call, settles after it, and labels its answer."""

    def __init__(self, meter: LlmMeter) -> None:
        self._meter = meter

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        if exchange.llm is None:
            return await call_next(exchange)
        await self._meter.reserve(exchange)
        try:
            response = await call_next(exchange)
        except BaseException:
            self._meter.settle_soon(exchange)
            raise
        call = exchange.llm  # a race's winner's, which may be a copy
        if not call.streaming:
            self._meter.summarize(exchange)
            await self._meter.settle(exchange)
        if call.provider is not None:
            response.headers.append(("x-llm-provider", call.provider))
        if call.model is not None:
            response.headers.append(("x-llm-model", call.model))
        if not call.streaming and call.usage is not None:
            response.headers.append(("x-llm-usage", call.usage.header_value()))
            if call.cost is not None:
                response.headers.append(("x-llm-cost", format_usd(call.cost)))
        return response
