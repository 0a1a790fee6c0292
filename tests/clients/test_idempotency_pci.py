"""Idempotency-Key from the Stripe SDK, and the PCI guard's refusal as the SDKs see it.

SPEC §2.3: the standard `Idempotency-Key` header (what stripe-python sends)
is an explicit key: a repeat is answered from the sidecar with
`Idempotent-Replayed: true` and never reaches the upstream; the same key
with another body is `422 idempotency_key_reused`, an error in the SDK.

SPEC §2.2: a card number in a Stripe form body or an OpenAI message is
refused with 400 and code `pci_card_number`, which each SDK raises as its
own error type carrying that code, without retrying; the upstream never
sees it, and the error does not repeat the digits.

Stripe is used the global way here (`stripe.api_base`, `stripe.api_key`,
`stripe.Charge.create`), as most of its users do.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import stripe

from tests.clients.conftest import ApiFakes, Counter, Sidecar, StripeCounter, start_sidecar
from tests.clients.fakes import FakeLoop, OpenAIFake, StripeFake, unique

# One worker runs this module's tests: its module-scoped sidecar (or data
# dir) is made once, not once per worker.
pytestmark = pytest.mark.xdist_group("clients/test_idempotency_pci")

CARD = "4242 4242 4242 4242"


@pytest.fixture(scope="module")
def fakes(loop: FakeLoop) -> ApiFakes:
    return ApiFakes.serve(loop)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, fakes: ApiFakes) -> Iterator[Sidecar]:
    with start_sidecar(tmp_path_factory.mktemp("idempotency"), fakes.routes()) as sidecar:
        yield sidecar


@pytest.fixture
def stripe_sent(sidecar: Sidecar, monkeypatch: pytest.MonkeyPatch) -> StripeCounter:
    """The global stripe module pointed at the sidecar; what it sends, counted."""
    counter = StripeCounter()
    monkeypatch.setattr(stripe, "api_base", sidecar.url + "/r/pay")
    monkeypatch.setattr(stripe, "api_key", "x")
    monkeypatch.setattr(stripe, "default_http_client", counter.client())
    return counter


def test_stripe_idempotency_key_replays_and_refuses_reuse(
    stripe_sent: StripeCounter, pay: StripeFake
) -> None:
    key = unique("order-1001")
    first = stripe.Charge.create(amount=2000, currency="usd", idempotency_key=key)
    second = stripe.Charge.create(amount=2000, currency="usd", idempotency_key=key)

    assert second.id == first.id
    assert (pay.charges, len(pay.seen)) == (1, 1)
    assert pay.seen[0].headers["idempotency-key"] == key  # forwarded as it came
    assert first.last_response is not None and second.last_response is not None
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert second.last_response.headers.get("Idempotent-Replayed") == "true"

    with pytest.raises(stripe.StripeError) as raised:
        stripe.Charge.create(amount=9999, currency="usd", idempotency_key=key)
    # stripe-python raises a 422 as its generic APIError: the code is on .error.
    assert raised.value.http_status == 422
    assert raised.value.error is not None
    assert raised.value.error.code == "idempotency_key_reused"
    assert len(pay.seen) == 1
    assert len(stripe_sent.sent) == 3  # the SDK did not retry the 422


def test_stripe_calls_without_a_key_are_distinct_charges(
    stripe_sent: StripeCounter, pay: StripeFake
) -> None:
    # stripe-python sends a fresh Idempotency-Key of its own with every POST.
    first = stripe.Charge.create(amount=2000, currency="usd")
    second = stripe.Charge.create(amount=2000, currency="usd")

    assert first.id != second.id
    assert pay.charges == 2
    assert second.last_response is not None
    assert second.last_response.headers.get("Idempotent-Replayed") is None


@pytest.mark.parametrize("number", [CARD, CARD.replace(" ", "")])
def test_stripe_card_number_in_a_form_body_is_refused(
    stripe_sent: StripeCounter, pay: StripeFake, number: str
) -> None:
    # Form-encoded: card[number]=4242+4242+4242+4242 (or the bare digits).
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe.PaymentMethod.create(
            type="card",
            card={"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        )

    assert raised.value.http_status == 400
    assert raised.value.code == "pci_card_number"
    assert (raised.value.headers or {}).get("x-should-retry") == "false"
    assert number.replace(" ", "") not in str(raised.value).replace(" ", "")
    assert len(stripe_sent.sent) == 1
    assert pay.seen == []


def test_openai_card_number_in_a_message_is_refused(sidecar: Sidecar, chat: OpenAIFake) -> None:
    counter = Counter()
    client = openai.OpenAI(
        base_url=sidecar.url + "/r/chat/v1", api_key="x", http_client=counter.client()
    )
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": f"Charge my card {CARD}, exp 12/30"}],
        )

    assert raised.value.status_code == 400
    assert raised.value.code == "pci_card_number"
    assert raised.value.response.headers.get("x-should-retry") == "false"
    assert "4242" not in raised.value.response.text
    assert len(counter.sent) == 1
    assert chat.seen == []
