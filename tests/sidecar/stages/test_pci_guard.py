"""The PCI guard stage: a card number in the body or query stops the request (SPEC §2.2)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sidecar.clock import SYSTEM_CLOCK
from sidecar.errors import PciCardNumber
from sidecar.exchange import Exchange, Response
from sidecar.pipeline import Parts, build, standard_stages
from sidecar.policy import parse_policy
from sidecar.routing.routes import Endpoint, Route
from sidecar.stages.pci_guard import PciGuard
from sidecar.stages.routing import Routing
from sidecar.store.embedded import EmbeddedStore
from tests.support.upstream import Upstream

CARD = "4111111111111111"
VAULT = Route("vault", (Endpoint("https://vault.test"),), pci_guard=False)
PAY = Route("pay", (Endpoint("https://pay.test"),))
ROUTES = {"vault": VAULT, "pay": PAY}


def exchange(body: bytes = b"", query: str = "", path: str = "/", **headers: str) -> Exchange:
    lowered = [(name.replace("_", "-").lower(), value) for name, value in headers.items()]
    lowered.append(("x-target-url", "https://upstream.test"))
    return Exchange("POST", path, query, lowered, body, parse_policy(dict(lowered)), "rid")


class Upstreams:
    """The terminal: counts the requests that got past the stages."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, exchange: Exchange) -> Response:
        self.calls += 1
        return Response(200, [], b"ok")


async def guard(ex: Exchange) -> Upstreams:
    """Run Routing then PciGuard on `ex`, as the pipeline does."""
    terminal = Upstreams()
    await build([Routing(ROUTES), PciGuard()], terminal)(ex)
    return terminal


async def test_a_card_in_the_body_is_refused_with_its_offset_and_not_its_digits() -> None:
    body = f'{{"amount":100,"card":"{CARD}"}}'.encode()
    with pytest.raises(PciCardNumber) as raised:
        await guard(exchange(body))
    assert raised.value.status == 400
    assert raised.value.code == "pci_card_number"
    assert f"the body at offset {body.index(CARD.encode())}" in raised.value.message
    assert "4111" not in raised.value.message


async def test_a_card_in_the_query_string_is_refused() -> None:
    with pytest.raises(PciCardNumber) as raised:
        await guard(exchange(query=f"a=1&pan={CARD}"))
    assert "the query string at offset 8" in raised.value.message
    assert "4111" not in raised.value.message


async def test_a_url_encoded_grouped_card_in_the_query_is_refused() -> None:
    with pytest.raises(PciCardNumber) as raised:
        await guard(exchange(query="pan=4111+1111+1111+1111&x=%35"))
    assert "the query string at offset 4 once URL-decoded" in raised.value.message


async def test_a_form_body_is_scanned_url_decoded() -> None:
    body = b"amount=100&pan=4111%201111%201111%201111"
    with pytest.raises(PciCardNumber) as raised:
        await guard(exchange(body, content_type="application/x-www-form-urlencoded"))
    assert "the body at offset 15 once URL-decoded" in raised.value.message


async def test_an_encoded_dash_grouping_in_a_form_body_is_refused() -> None:
    body = b"pan=4111%2D1111%2d1111%2D1111&amount=100"
    with pytest.raises(PciCardNumber) as raised:
        await guard(exchange(body, content_type="application/x-www-form-urlencoded; charset=utf-8"))
    assert "the body at offset 4 once URL-decoded" in raised.value.message


async def test_only_form_bodies_are_url_decoded() -> None:
    # In JSON, `+` is no separator and `%20` no space: this is no card grouping.
    body = b'{"pan":"4111+1111+1111+1111","alt":"4111%201111%201111%201111"}'
    terminal = await guard(exchange(body, content_type="application/json"))
    assert terminal.calls == 1


async def test_a_body_without_a_card_passes() -> None:
    terminal = await guard(exchange(b'{"created":1700000000000,"order":"9000000000000000004"}'))
    assert terminal.calls == 1


async def test_a_route_may_switch_the_guard_off() -> None:
    terminal = await guard(exchange(CARD.encode(), query=f"pan={CARD}", path="/r/vault/tokens"))
    assert terminal.calls == 1


async def test_a_route_that_keeps_the_guard_refuses() -> None:
    with pytest.raises(PciCardNumber):
        await guard(exchange(CARD.encode(), path="/r/pay/charges"))


async def test_no_header_switches_the_guard_off() -> None:
    ex = exchange(CARD.encode(), X_PCI_Guard="off", X_MirApi_PCI_Guard="off")
    with pytest.raises(PciCardNumber):
        await guard(ex)


async def test_the_standard_pipeline_never_calls_upstream_for_a_blocked_request(
    tmp_path: Path,
) -> None:
    store = EmbeddedStore(tmp_path / "mirapi.db", SYSTEM_CLOCK)
    await store.open()
    try:
        terminal = Upstreams()
        chain = build(
            standard_stages(
                Parts(store=store, max_body=1 << 20, cache_entry_limit=1 << 20, routes=ROUTES)
            ),
            terminal,
        )
        with pytest.raises(PciCardNumber):
            await chain(exchange(CARD.encode(), X_Proxy_Idempotency_Key="k1"))
        assert terminal.calls == 0
        # Nothing was recorded under the key: the same key with a clean body goes through.
        response = await chain(exchange(b"amount=100", X_Proxy_Idempotency_Key="k1"))
        assert response.status == 200
        assert terminal.calls == 1
    finally:
        await store.close()


async def test_over_http_the_client_gets_400_and_the_upstream_nothing(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    body = f'{{"card":"{CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}"}}'.encode()
    response = await client.post(
        "/v1/charges", headers={"X-Target-URL": upstream.url}, content=body
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "pci_card_number"
    assert "offset 9" in error["message"]
    assert "4111" not in response.text
    assert upstream.seen == []
