"""The secret injection stage: which credential, per target, and when it is locked.

Most tests call the stage directly with a factory-built exchange and a
recording `call_next`; the last ones run it in a chain with Routing, the
race/cascade stages, StripHeaders and Forward against a real upstream, and
check what the upstream received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sidecar.errors import BadHeader, MirApiError, RouteInvalid, SecretLocked
from sidecar.exchange import Exchange, Response, TargetOptions
from sidecar.outbound.upstream import UpstreamClient
from sidecar.pipeline import build
from sidecar.policy import parse_policy
from sidecar.routing.routes import Endpoint, Route
from sidecar.security.egress import EgressPolicy
from sidecar.security.secrets import Secret, parse_secret
from sidecar.security.vault import KdfCost, Vault
from sidecar.stages.cascade import Cascade
from sidecar.stages.forward import Forward
from sidecar.stages.inject_secrets import InjectSecrets
from sidecar.stages.race import Race
from sidecar.stages.retry import Retry
from sidecar.stages.routing import Routing
from sidecar.stages.strip_headers import StripHeaders
from tests.support.clock import FakeClock
from tests.support.upstream import Upstream, reply

FAST = KdfCost(n=2**10)
MASTER = "m4ster passphrase"
SOURCE = Vault(FAST)

STRIPE = "https://api.stripe.com/v1/charges"
OPENAI = "https://api.openai.com/v1/chat"
ELSEWHERE = "https://elsewhere.example/v1"
VALUES = {"stripe": "sk_live_1", "stripe-test": "sk_test_2", "openai": "oa_key_3"}


def stored(name: str, host: str, **more: str) -> Secret:
    return parse_secret(name, host, SOURCE.encrypt_now(MASTER, VALUES[name], name), **more)


SECRETS = {
    "stripe": stored("stripe", "api.stripe.com"),
    "stripe-test": stored("stripe-test", "api.stripe.com"),
    "openai": stored("openai", "api.openai.com", header="X-Api-Key", format="{}"),
}


def exchange(
    *targets: str,
    route: Route | None = None,
    options: tuple[TargetOptions, ...] = (),
    **headers: str,
) -> Exchange:
    lowered = [(name.replace("_", "-").lower(), value) for name, value in headers.items()]
    ex = Exchange("POST", "/", "", lowered, b"{}", parse_policy(dict(lowered), 30.0), "rid")
    ex.targets = targets or (STRIPE,)
    ex.target_options = options
    ex.route = route
    return ex


class Recorder:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, ex: Exchange) -> Response:
        self.calls += 1
        return Response(200, [])


def stage(unlocked: str | None = MASTER, secrets: dict[str, Secret] | None = None) -> InjectSecrets:
    table = SECRETS if secrets is None else secrets
    return InjectSecrets(lambda: table, Vault(FAST), unlocked)


async def injected(
    ex: Exchange, unlocked: str | None = MASTER
) -> dict[str, tuple[tuple[str, str], ...]]:
    recorder = Recorder()
    await stage(unlocked)(ex, recorder)
    assert recorder.calls == 1
    return ex.secret_headers


async def refused(ex: Exchange, unlocked: str | None = MASTER) -> MirApiError:
    recorder = Recorder()
    with pytest.raises(MirApiError) as raised:
        await stage(unlocked)(ex, recorder)
    assert recorder.calls == 0, "nothing goes upstream when the credential is refused"
    for secret in (MASTER, *VALUES.values()):
        assert secret not in raised.value.message
    return raised.value


# -- host match ------------------------------------------------------------------


async def test_the_secret_whose_host_is_the_targets_is_injected_first_by_name() -> None:
    assert await injected(exchange(STRIPE)) == {STRIPE: (("authorization", "Bearer sk_live_1"),)}


async def test_each_target_gets_its_own_hosts_secret_and_other_hosts_get_none() -> None:
    plan = await injected(exchange(STRIPE, OPENAI, ELSEWHERE, "https://API.OpenAI.com:8443/x"))
    assert plan == {
        STRIPE: (("authorization", "Bearer sk_live_1"),),
        OPENAI: (("x-api-key", "oa_key_3"),),
        "https://API.OpenAI.com:8443/x": (("x-api-key", "oa_key_3"),),
    }


async def test_a_host_match_replaces_the_clients_placeholder_but_not_an_endpoints_header() -> None:
    # Every SDK sends a key of its own (OpenAI(api_key="x")): the secret replaces it.
    assert await injected(exchange(STRIPE, Authorization="Bearer x")) == {
        STRIPE: (("authorization", "Bearer sk_live_1"),)
    }
    # An operator's explicit endpoint header stays.
    endpoint = TargetOptions(headers=(("x-api-key", "route's own"),))
    plan = await injected(exchange(STRIPE, OPENAI, options=(TargetOptions(), endpoint)))
    assert plan == {STRIPE: (("authorization", "Bearer sk_live_1"),)}


async def test_nothing_to_inject_needs_no_passphrase_and_ignores_a_wrong_one() -> None:
    assert await injected(exchange(ELSEWHERE), unlocked=None) == {}
    assert await injected(exchange(ELSEWHERE, X_Proxy_Master_Key="wrong"), unlocked=None) == {}


# -- X-Identity-Key ----------------------------------------------------------------


async def test_a_plain_identity_key_becomes_a_bearer_authorization_for_every_target() -> None:
    ex = exchange(STRIPE, ELSEWHERE, X_Identity_Key="client_key", X_Proxy_Secret="stripe")
    plan = await injected(ex, unlocked=None)
    assert plan == {url: (("authorization", "Bearer client_key"),) for url in (STRIPE, ELSEWHERE)}


async def test_an_identity_key_with_a_scheme_is_used_as_it_is() -> None:
    plan = await injected(exchange(X_Identity_Key="Basic dXNlcjpwdw=="), unlocked=None)
    assert plan == {STRIPE: (("authorization", "Basic dXNlcjpwdw=="),)}


async def test_an_identity_token_is_decrypted_with_the_master_key_header() -> None:
    token = SOURCE.encrypt_now(MASTER, "sk_from_token", "")
    ex = exchange(ELSEWHERE, X_Identity_Key=token, X_Proxy_Master_Key=MASTER)
    assert await injected(ex, unlocked=None) == {
        ELSEWHERE: (("authorization", "Bearer sk_from_token"),)
    }
    # ... or with the passphrase the sidecar was unlocked with.
    assert await injected(exchange(ELSEWHERE, X_Identity_Key=token)) == {
        ELSEWHERE: (("authorization", "Bearer sk_from_token"),)
    }


async def test_an_identity_token_with_a_wrong_or_no_passphrase_is_secret_locked() -> None:
    token = SOURCE.encrypt_now(MASTER, "sk_from_token", "")
    wrong = await refused(exchange(X_Identity_Key=token, X_Proxy_Master_Key="nope"))
    assert isinstance(wrong, SecretLocked)
    assert (wrong.status, wrong.code) == (401, "secret_locked")
    assert "X-Proxy-Master-Key" in wrong.message
    none = await refused(exchange(X_Identity_Key=token), unlocked=None)
    assert isinstance(none, SecretLocked)
    assert "X-Proxy-Master-Key" in none.message and "--unlock" in none.message


async def test_a_stored_secrets_token_is_no_identity_token() -> None:
    # Bound to its name: a copy of a stored ciphertext does not decrypt as a free token.
    error = await refused(exchange(X_Identity_Key=SECRETS["stripe"].token))
    assert isinstance(error, SecretLocked)


async def test_a_malformed_identity_token_or_an_empty_key_is_a_bad_header() -> None:
    for value in ("mirapi:v1:!!notbase64", " "):
        error = await refused(exchange(X_Identity_Key=value))
        assert isinstance(error, BadHeader) and error.header == "X-Identity-Key"


# -- X-Proxy-Secret and the route's secret -----------------------------------------


async def test_x_proxy_secret_picks_a_secret_and_replaces_the_clients_header() -> None:
    ex = exchange(STRIPE, X_Proxy_Secret="stripe-test", Authorization="Bearer mine")
    assert await injected(ex) == {STRIPE: (("authorization", "Bearer sk_test_2"),)}


async def test_an_unknown_x_proxy_secret_is_a_bad_header_naming_it() -> None:
    error = await refused(exchange(X_Proxy_Secret="nope"))
    assert isinstance(error, BadHeader) and error.header == "X-Proxy-Secret"
    assert "'nope'" in error.message


async def test_a_named_secret_is_never_sent_to_another_host() -> None:
    error = await refused(exchange(ELSEWHERE, X_Proxy_Secret="stripe"))
    assert isinstance(error, BadHeader) and error.header == "X-Proxy-Secret"
    assert "api.stripe.com" in error.message
    # With a target on its host it goes there only; the others fall back to their host's.
    plan = await injected(exchange(STRIPE, OPENAI, ELSEWHERE, X_Proxy_Secret="stripe-test"))
    assert plan == {
        STRIPE: (("authorization", "Bearer sk_test_2"),),
        OPENAI: (("x-api-key", "oa_key_3"),),
    }


def route(secret: str | None, *urls: str) -> Route:
    return Route("pay", tuple(Endpoint(url) for url in urls or (STRIPE,)), secret=secret)


async def test_the_routes_secret_applies_on_its_host_before_x_proxy_secret() -> None:
    pay = route("stripe-test", STRIPE, OPENAI)
    assert await injected(exchange(STRIPE, OPENAI, route=pay)) == {
        STRIPE: (("authorization", "Bearer sk_test_2"),),
        OPENAI: (("x-api-key", "oa_key_3"),),
    }
    ex = exchange(STRIPE, route=route("stripe-test"), X_Proxy_Secret="stripe")
    assert await injected(ex) == {STRIPE: (("authorization", "Bearer sk_test_2"),)}


def endpoints(*pairs: tuple[str, str | None], secret: str | None = None) -> Route:
    return Route("pay", tuple(Endpoint(url, secret=name) for url, name in pairs), secret=secret)


async def test_an_endpoints_own_secret_comes_first_and_the_others_keep_their_hosts() -> None:
    pay = endpoints((STRIPE, "stripe-test"), (OPENAI, None), secret="stripe")
    ex = exchange(STRIPE, OPENAI, route=pay, Authorization="Bearer placeholder")
    assert await injected(ex) == {
        STRIPE: (("authorization", "Bearer sk_test_2"),),
        OPENAI: (("x-api-key", "oa_key_3"),),
    }


async def test_an_endpoint_secret_that_is_gone_or_for_another_host_is_route_invalid() -> None:
    gone = await refused(exchange(STRIPE, route=endpoints((STRIPE, "deleted"))))
    assert isinstance(gone, RouteInvalid) and "endpoint 1" in gone.message
    elsewhere = await refused(exchange(OPENAI, route=endpoints((OPENAI, "stripe"))))
    assert isinstance(elsewhere, RouteInvalid) and "api.stripe.com" in elsewhere.message


async def test_failover_urls_each_get_their_own_hosts_secret_never_the_named_one() -> None:
    ex = exchange(STRIPE, OPENAI, X_Proxy_Secret="stripe-test", Authorization="Bearer x")
    assert await injected(ex) == {
        STRIPE: (("authorization", "Bearer sk_test_2"),),
        OPENAI: (("x-api-key", "oa_key_3"),),
    }


async def test_a_route_naming_a_missing_or_misplaced_secret_is_route_invalid() -> None:
    gone = await refused(exchange(route=route("deleted")))
    assert isinstance(gone, RouteInvalid) and "'deleted'" in gone.message
    elsewhere = await refused(exchange(ELSEWHERE, route=route("stripe", ELSEWHERE)))
    assert isinstance(elsewhere, RouteInvalid) and "api.stripe.com" in elsewhere.message


# -- the passphrase --------------------------------------------------------------


async def test_a_stored_secret_without_a_passphrase_is_secret_locked_before_any_call() -> None:
    error = await refused(exchange(STRIPE), unlocked=None)
    assert isinstance(error, SecretLocked)
    assert "--unlock" in error.message


async def test_a_wrong_master_key_header_is_locked_even_when_the_sidecar_is_unlocked() -> None:
    error = await refused(exchange(STRIPE, X_Proxy_Master_Key="wrong"))
    assert isinstance(error, SecretLocked) and "X-Proxy-Master-Key" in error.message
    ok = await injected(exchange(STRIPE, X_Proxy_Master_Key=MASTER), unlocked="stale")
    assert ok == {STRIPE: (("authorization", "Bearer sk_live_1"),)}
    stale = await refused(exchange(STRIPE), unlocked="stale")
    assert isinstance(stale, SecretLocked) and "unlocked" in stale.message


async def test_a_utf8_passphrase_sent_in_a_header_is_read_as_utf8() -> None:
    passphrase = "clé secrète ✓"
    table = {"s": parse_secret("s", "api.stripe.com", SOURCE.encrypt_now(passphrase, "v1", "s"))}
    # The edge decodes header bytes as latin-1.
    as_received = passphrase.encode("utf-8").decode("latin-1")
    ex = exchange(STRIPE, X_Proxy_Master_Key=as_received)
    await stage(None, table)(ex, Recorder())
    assert ex.secret_headers == {STRIPE: (("authorization", "Bearer v1"),)}


async def test_a_corrupt_stored_secret_is_a_500_that_names_it_not_its_token() -> None:
    token = SOURCE.encrypt_now(MASTER, "line\nbreak", "bad")  # what add would refuse
    table = {"bad": parse_secret("bad", "api.stripe.com", token)}
    recorder = Recorder()
    with pytest.raises(MirApiError) as raised:
        await stage(MASTER, table)(exchange(STRIPE), recorder)
    assert (raised.value.status, raised.value.code) == (500, "secret_invalid")
    assert "'bad'" in raised.value.message and token not in raised.value.message
    assert recorder.calls == 0


# -- in a chain, against a real upstream -------------------------------------------


class Names:
    """A resolver that sends every name to 127.0.0.1: distinct hosts, one upstream."""

    async def resolve(self, host: str, port: int) -> list[str]:
        return ["127.0.0.1"]


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream_client = UpstreamClient(EgressPolicy(allow_private=True, resolver=Names()))
    try:
        yield upstream_client
    finally:
        await upstream_client.aclose()


def chain_secrets() -> dict[str, Secret]:
    a = parse_secret("a", "a.test", SOURCE.encrypt_now(MASTER, "VALUE_A", "a"))
    b = parse_secret("b", "b.test", SOURCE.encrypt_now(MASTER, "VALUE_B", "b"), header="X-Key")
    return {"a": a, "b": b}


async def run_chain(client: UpstreamClient, routes: dict[str, Route], **headers: str) -> Response:
    table = chain_secrets()
    stages = [
        Routing(routes),
        InjectSecrets(lambda: table, Vault(FAST), None),
        Race(),
        Cascade(),
        Retry(FakeClock()),
        StripHeaders(),
    ]
    handler = build(stages, Forward(client))
    lowered = [(name.replace("_", "-").lower(), value) for name, value in headers.items()]
    ex = Exchange("GET", "/v1/x", "", lowered, b"", parse_policy(dict(lowered), 10.0), "rid")
    return await handler(ex)


def seen_by_host(upstream: Upstream) -> dict[str, dict[str, str]]:
    return {seen.headers["host"].split(":")[0]: seen.headers for seen in upstream.seen}


async def test_the_upstream_sees_each_endpoints_own_secret_and_no_proxy_header(
    upstream: Upstream, client: UpstreamClient
) -> None:
    port = upstream.url.rsplit(":", 1)[1]
    pay = Route("pay", (Endpoint(f"http://a.test:{port}"), Endpoint(f"http://b.test:{port}")))
    upstream.then(reply(503, b"down"))
    response = await run_chain(
        client, {"pay": pay}, X_Route_Key="pay", X_Proxy_Master_Key=MASTER, X_Key="client's"
    )
    await response.discard()
    assert response.status == 200
    seen = seen_by_host(upstream)
    assert seen["a.test"]["authorization"] == "Bearer VALUE_A"
    # The client sent X-Key itself (an SDK's placeholder): b's own secret replaces it.
    assert seen["b.test"]["x-key"] == "Bearer VALUE_B" and "authorization" not in seen["b.test"]
    for headers in seen.values():
        assert not any(name.startswith(("x-proxy-", "x-identity-")) for name in headers)


async def test_race_branches_keep_their_own_endpoints_secret(
    upstream: Upstream, client: UpstreamClient
) -> None:
    port = upstream.url.rsplit(":", 1)[1]
    race = Route(
        "llm",
        (Endpoint(f"http://a.test:{port}"), Endpoint(f"http://b.test:{port}")),
        strategy="race",
    )
    upstream.default = reply(200, b"{}", delay=0.2)
    response = await run_chain(client, {"llm": race}, X_Route_Key="llm", X_Proxy_Master_Key=MASTER)
    await response.discard()
    seen = seen_by_host(upstream)
    assert seen["a.test"]["authorization"] == "Bearer VALUE_A" and "x-key" not in seen["a.test"]
    assert seen["b.test"]["x-key"] == "Bearer VALUE_B" and "authorization" not in seen["b.test"]


async def test_an_identity_key_reaches_the_upstream_as_authorization_and_nothing_else(
    upstream: Upstream, client: UpstreamClient
) -> None:
    port = upstream.url.rsplit(":", 1)[1]
    response = await run_chain(
        client, {}, X_Target_URL=f"http://a.test:{port}", X_Identity_Key="client_key"
    )
    await response.discard()
    (seen,) = upstream.seen
    assert seen.headers["authorization"] == "Bearer client_key"
    assert "x-identity-key" not in seen.headers
