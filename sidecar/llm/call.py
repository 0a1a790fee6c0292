"""One LLM call on its way through the pipeline (SPEC §10).

Routing makes an `LlmCall` when the request is a `POST …/chat/completions`
(OpenAI format) or `POST …/messages` (Anthropic format) and a target names
a provider; every other request has none and pays nothing for this.

The call holds the client's request as parsed once, the budget reservation
the budget stage made, and what the answering attempt learned (provider,
model, usage, cost, time to first token, whether its stream was cut). The
observers (metrics, events) read it from the exchange once the answer has
been sent, so no stage has to tell them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from sidecar.llm.formats import Format, LlmRequest, call_format, parse_request
from sidecar.llm.usage import Usage

if TYPE_CHECKING:
    from sidecar.exchange import Exchange, TargetOptions


@dataclass(frozen=True, slots=True)
class Reservation:
    """Budget held for one call until it is settled or released."""

    id: str
    scopes: tuple[str, ...]
    day: str


@dataclass(slots=True)
class LlmCall:
    """The client's LLM request and what its answer turned out to cost."""

    request: LlmRequest
    #: The output tokens the call may use: the client's max_tokens, lowered by
    #: `X-LLM-Budget: …; clamp`; None leaves the body's own.
    max_tokens: int | None = None
    #: Whether the call's cost is counted against budgets (a price is known).
    metered: bool = True
    reservation: Reservation | None = None
    #: Learned from the attempt that answered.
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None
    #: The endpoint that answered is `price = "free"`.
    free: bool = False
    cost: Decimal | None = None
    #: Seconds from the request's arrival to the first content of its stream.
    first_token: float | None = None
    #: The answer is a stream committed to an endpoint: its end settles the budget.
    streaming: bool = False
    #: The committed stream failed before its end (an in-band error was sent).
    cut: bool = False
    #: No price is known for the model that answered (or would have).
    price_unknown: bool = False
    #: Endpoints skipped because the call cannot be expressed there:
    #: (provider, the field the other side lacks), for `llm_untranslatable` events.
    untranslatable: list[tuple[str, str]] = field(default_factory=list)
    #: The budget reservation was settled or released (once only).
    settled: bool = False

    @property
    def format(self) -> Format:
        """The wire format the client speaks."""
        return self.request.format


def detect_llm_call(exchange: Exchange) -> LlmCall | None:
    """The LLM call `exchange` is, or None: not a chat POST, no provider, or not JSON."""
    if exchange.method != "POST":
        return None
    fmt = call_format(exchange.method, exchange.path)
    if fmt is None:
        return None
    if not any(option.provider for option in exchange.target_options):
        return None
    request = parse_request(fmt, exchange.body)
    if request is None:
        # Not a JSON object: proxied as any API; the provider will say what is wrong.
        return None
    return LlmCall(request)


def model_at(options: TargetOptions, call_format: Format, requested: str | None) -> str | None:
    """The model a call asking for `requested` uses at an endpoint with `options`.

    The endpoint's `model`, else its `model_map` entry, else (same format
    only) the client's own; None when an endpoint of the other format has
    no model for the call, which is then skipped there (SPEC §10).
    """
    if options.model is not None:
        return options.model
    for client_model, endpoint_model in options.model_map:
        if client_model == requested:
            return endpoint_model
    return requested if options.provider == call_format else None

