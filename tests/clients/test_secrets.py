"""Secret offloading with the SDKs' placeholder keys (SPEC §2.8, issue 13 #1).

Every SDK sends a key of its own (`api_key="x"`: OpenAI refuses none). The
sidecar's injected secret replaces it, chosen per attempt: the endpoint's
`secret`, else the route's, else the secret whose host is the endpoint's.
Each upstream must receive its own host's secret: never the placeholder,
never another host's. The route's endpoints are on 127.0.0.2 and 127.0.0.3
(a secret is matched by host); the first answers 503 once where a test
needs the second endpoint to be called too.

Stored with `printf %s VALUE | mirapi secrets add NAME --host H` (the value
on stdin, the passphrase in $MIRAPI_MASTER_KEY), sidecar started with
`--unlock`. At the end the data dir (store, log) is searched for every value.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import anthropic
import openai
import pytest
import stripe

from tests.clients.conftest import PASSPHRASE, Counter, SecretSpec, Sidecar, start_sidecar
from tests.clients.fakes import AnthropicFake, FakeLoop, OpenAIFake, StripeFake
from tests.e2e.test_secrets import leaks

# The module's sidecar is set up by the first test: five `secrets add` and an
# unlock, each a scrypt of 128 MiB, are slow on a busy machine.
# One worker runs this module's tests: its module-scoped sidecar is made once,
# not once per worker.
pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("clients/test_secrets")]

HOST_A = SecretSpec("openai-a", "127.0.0.2", "sk-SECRET-for-host-2")
HOST_B = SecretSpec("openai-b", "127.0.0.3", "sk-SECRET-for-host-3")
# A second secret for host A: what an endpoint names, beating the host's own.
TEAM_A = SecretSpec("team-a", "127.0.0.2", "sk-TEAM-for-host-2")
# anthropic 2 sends its key as `Authorization: Bearer` (1.x sent `X-Api-Key`).
CLAUDE = SecretSpec("claude", "127.0.0.4", "sk-ant-SECRET-host-4")
STRIPE = SecretSpec("stripe", "127.0.0.5", "sk_test_SECRET_host_5")
SECRETS = (HOST_A, HOST_B, TEAM_A, CLAUDE, STRIPE)
PLACEHOLDER = "x"


@dataclass(frozen=True)
class Fakes:
    a: OpenAIFake
    b: OpenAIFake
    claude: AnthropicFake
    pay: StripeFake


@dataclass
class Setup:
    sidecar: Sidecar
    fakes: Fakes
    #: `mirapi routes import` of a route whose endpoint names its own secret.
    endpoint_secret_import: str | None


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, loop: FakeLoop) -> Iterator[Setup]:
    fakes = Fakes(
        a=loop.serve(OpenAIFake(host=HOST_A.host)),
        b=loop.serve(OpenAIFake(host=HOST_B.host)),
        claude=loop.serve(AnthropicFake(host=CLAUDE.host)),
        pay=loop.serve(StripeFake(host=STRIPE.host)),
    )
    pair = f'endpoints = [{{ url = "{fakes.a.url}" }}, {{ url = "{fakes.b.url}" }}]\n'
    routes = (
        f"[routes.chat]\n{pair}"
        f'[routes.chat-route-secret]\nsecret = "{HOST_A.name}"\n{pair}'
        f'[routes.claude]\nendpoints = [{{ url = "{fakes.claude.url}" }}]\n'
        f'[routes.pay]\nendpoints = [{{ url = "{fakes.pay.url}" }}]\n'
    )
    # The endpoint `secret` field is imported on its own: were it refused,
    # only the test that needs it fails, with the CLI's message.
    endpoint_secret = (
        "[routes.chat-endpoint-secret]\n"
        f'endpoints = [{{ url = "{fakes.a.url}", secret = "{TEAM_A.name}" }},'
        f' {{ url = "{fakes.b.url}" }}]\n'
    )
    base = tmp_path_factory.mktemp("secrets")
    with start_sidecar(base, routes, SECRETS) as sidecar:
        done = sidecar.import_routes(endpoint_secret, "endpoint-secret.toml")
        refused = None if done.returncode == 0 else done.stderr.strip() or "refused"
        yield Setup(sidecar, fakes, refused)


@pytest.fixture
def fakes(setup: Setup) -> Fakes:
    for fake in (setup.fakes.a, setup.fakes.b, setup.fakes.claude, setup.fakes.pay):
        fake.reset()
    return setup.fakes


def chat(setup: Setup, route: str) -> Counter:
    """One chat completion through `route` with the placeholder key; the SDK's requests."""
    counter = Counter()
    client = openai.OpenAI(
        base_url=f"{setup.sidecar.url}/r/{route}/v1",
        api_key=PLACEHOLDER,
        http_client=counter.client(),
        max_retries=0,
    )
    reply = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    return counter


def bearer(secret: SecretSpec) -> str:
    return f"Bearer {secret.value}"


def test_each_endpoint_gets_its_own_hosts_secret(setup: Setup, fakes: Fakes) -> None:
    chat(setup, "chat")
    assert fakes.a.auth() == [bearer(HOST_A)]
    assert fakes.b.auth() == []

    fakes.a.fail_next = 1  # the first endpoint fails: the second is called too
    chat(setup, "chat")
    assert fakes.a.auth() == [bearer(HOST_A), bearer(HOST_A)]
    assert fakes.b.auth() == [bearer(HOST_B)]


def test_a_routes_secret_goes_to_its_host_the_other_endpoint_gets_its_own(
    setup: Setup, fakes: Fakes
) -> None:
    fakes.a.fail_next = 1
    chat(setup, "chat-route-secret")

    assert fakes.a.auth() == [bearer(HOST_A)]
    # Not the route's secret (another host's), not the SDK's placeholder.
    assert fakes.b.auth() == [bearer(HOST_B)]


def test_an_endpoints_own_secret_beats_the_hosts(setup: Setup, fakes: Fakes) -> None:
    assert setup.endpoint_secret_import is None, (
        f"routes import of an endpoint `secret`: {setup.endpoint_secret_import}"
    )
    fakes.a.fail_next = 1
    chat(setup, "chat-endpoint-secret")

    assert fakes.a.auth() == [bearer(TEAM_A)]
    assert fakes.b.auth() == [bearer(HOST_B)]


def test_anthropic_key_is_replaced(setup: Setup, fakes: Fakes) -> None:
    client = anthropic.Anthropic(
        base_url=setup.sidecar.url + "/r/claude",
        api_key=PLACEHOLDER,
        http_client=Counter().client(),
        max_retries=0,
    )
    client.messages.create(
        model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )

    [seen] = fakes.claude.seen
    assert seen.values("authorization") == bearer(CLAUDE)  # once: the placeholder is gone
    assert seen.values("x-api-key") == ""


def test_stripe_key_is_replaced(setup: Setup, fakes: Fakes) -> None:
    client = stripe.StripeClient(
        PLACEHOLDER, base_addresses={"api": setup.sidecar.url + "/r/pay"}, max_network_retries=0
    )
    client.v1.charges.create(params={"amount": 500, "currency": "eur"})

    assert fakes.pay.auth() == [bearer(STRIPE)]


def test_no_secret_value_is_written_anywhere(setup: Setup, fakes: Fakes) -> None:
    # Calls on every path above, then every file of the data dir (store, log).
    fakes.a.fail_next = 1
    chat(setup, "chat")
    chat(setup, "chat-route-secret")
    found = leaks(setup.sidecar.cli.data_dir, [s.value for s in SECRETS] + [PASSPHRASE])
    assert found == []
