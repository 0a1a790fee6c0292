"""One JSON line per proxied request, with no body and no credential in it."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import orjson

from sidecar.app import Sidecar
from sidecar.observability.logging import AccessLog
from sidecar.security.egress import EgressPolicy
from tests.conftest import make_settings
from tests.support.servers import serving
from tests.support.upstream import Upstream, reply


async def test_access_line_fields_and_no_secrets(tmp_path: Path, upstream: Upstream) -> None:
    upstream.then(reply(503))
    app = Sidecar(make_settings(tmp_path), egress=EgressPolicy(allow_private=True))
    stream = io.StringIO()
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        app.access_log = AccessLog(stream)
        await http.post(
            "/v1/charges?customer=cus_private_42",
            headers={
                "X-Target-URL": upstream.url,
                "X-Retry-Count": "1",
                "X-Retry-Delay": "1ms",
                "Authorization": "Bearer sk_live_secret",
                "X-Request-ID": "req-7",
            },
            content=b'{"amount": 2000, "secret": "body-secret"}',
        )
        await http.get("/", headers={"X-Request-ID": "4242 4242 4242 4242"})
        # Blocked by the PCI guard: its line has no query, body or digits of it.
        await http.post(
            "/v1/tokens?card=4242424242424242",
            headers={"X-Target-URL": upstream.url},
            content=b'{"number": "4000 0566 5566 5556"}',
        )
    text = stream.getvalue()
    first, second, blocked = (orjson.loads(line) for line in text.splitlines())
    assert first["request_id"] == "req-7"
    assert first["method"] == "POST"
    assert first["host"] == upstream.url.removeprefix("http://")
    assert first["status"] == 200
    assert first["attempts"] == 2
    assert first["rescue"] == "retry"
    assert first["logger"] == "mirapi.access"
    assert isinstance(first["latency_ms"], float)
    assert second["status"] == 400
    assert blocked["status"] == 400
    for secret in (
        "sk_live_secret",
        "body-secret",
        "cus_private_42",
        "4242424242424242",
        "4242 4242",
        "4000 0566",
        "/v1/charges",
        "/v1/tokens",
    ):
        assert secret not in text


async def test_unknown_control_path_is_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/_mirapi/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
