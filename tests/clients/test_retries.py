"""Retries do not multiply (SPEC §2.9, issue 13 #2).

The SDK retries on its own (`max_retries=2`), the route retries too
(`retry = 2`); the upstream always answers 503. The sidecar's final answer
carries `x-should-retry: false`, which the SDK obeys: it sends exactly one
request (counted with an event hook on its own http client) and the
upstream sees the route's three attempts, not nine.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest
import stripe

from tests.clients.conftest import ApiFakes, Counter, Sidecar, StripeCounter, start_sidecar
from tests.clients.fakes import FakeLoop

# One worker runs this module's tests: its module-scoped sidecar (or data
# dir) is made once, not once per worker.
pytestmark = pytest.mark.xdist_group("clients/test_retries")

ROUTE_RETRIES = 2
SDK_RETRIES = 2


@pytest.fixture(scope="module")
def fakes(loop: FakeLoop) -> ApiFakes:
    return ApiFakes.serve(loop)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, fakes: ApiFakes) -> Iterator[Sidecar]:
    policy = f'retry = {ROUTE_RETRIES}\nretry_delay = "10ms"\n'
    with start_sidecar(tmp_path_factory.mktemp("retries"), fakes.routes(policy)) as sidecar:
        yield sidecar


@pytest.fixture(autouse=True)
def down(fakes: ApiFakes) -> None:
    """Every upstream answers 503, always."""
    for fake in fakes.all():
        fake.reset()
        fake.always_fail = True


def test_openai_sdk_does_not_retry_what_the_sidecar_already_retried(
    sidecar: Sidecar, fakes: ApiFakes
) -> None:
    counter = Counter()
    client = openai.OpenAI(
        base_url=sidecar.url + "/r/chat/v1",
        api_key="x",
        max_retries=SDK_RETRIES,
        http_client=counter.client(),
    )
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )

    assert raised.value.status_code == 503
    assert raised.value.response.headers.get("x-should-retry") == "false"
    assert (len(counter.sent), len(fakes.chat.seen)) == (1, 1 + ROUTE_RETRIES)


def test_anthropic_sdk_does_not_retry_what_the_sidecar_already_retried(
    sidecar: Sidecar, fakes: ApiFakes
) -> None:
    counter = Counter()
    client = anthropic.Anthropic(
        base_url=sidecar.url + "/r/claude",
        api_key="x",
        max_retries=SDK_RETRIES,
        http_client=counter.client(),
    )
    with pytest.raises(anthropic.InternalServerError) as raised:
        client.messages.create(
            model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )

    assert raised.value.status_code == 503
    assert raised.value.response.headers.get("x-should-retry") == "false"
    assert (len(counter.sent), len(fakes.claude.seen)) == (1, 1 + ROUTE_RETRIES)


def test_stripe_sdk_does_not_retry_what_the_sidecar_already_retried(
    sidecar: Sidecar, fakes: ApiFakes
) -> None:
    counter = StripeCounter()
    client = stripe.StripeClient(
        "x",
        base_addresses={"api": sidecar.url + "/r/pay"},
        max_network_retries=SDK_RETRIES,
        http_client=counter.client(),
    )
    with pytest.raises(stripe.APIError) as raised:
        client.v1.charges.create(params={"amount": 100, "currency": "usd"})

    assert raised.value.http_status == 503
    # Every attempt, the SDK's and the sidecar's, carried the SDK's one key.
    assert len({seen.headers["idempotency-key"] for seen in fakes.pay.seen}) == 1
    assert (len(counter.sent), len(fakes.pay.seen)) == (1, 1 + ROUTE_RETRIES)
