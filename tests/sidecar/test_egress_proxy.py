"""The egress policy as a client of the sidecar sees it (SPEC §3).

Real requests go to loopback spellings only. Names that resolve to private,
link-local or public ranges come from an injected resolver, and a connection
spy proves no connection was even attempted.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.app import Sidecar
from sidecar.security.egress import EgressPolicy
from tests.conftest import make_settings
from tests.support.servers import serving
from tests.support.upstream import Upstream

FAKE_DNS = {
    "private.test": ["10.1.2.3"],
    "cgnat.test": ["100.64.0.9"],
    "metadata.test": ["169.254.169.254"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "nat64.test": ["64:ff9b::7f00:1"],
    "sixtofour.test": ["2002:c0a8:101::1"],
    "rebind.test": ["93.184.216.34", "192.168.1.1"],
    "ula.test": ["fd00::1"],
}


class FakeResolver:
    async def resolve(self, host: str, port: int) -> list[str]:
        return FAKE_DNS.get(host, ["127.0.0.1"])


@pytest.fixture
async def connection_spy() -> AsyncIterator[list[Any]]:
    """Records every outgoing connection; fails any that leaves loopback."""
    loop = asyncio.get_running_loop()
    attempts: list[Any] = []
    real = loop.create_connection

    async def spy(*args: Any, **kwargs: Any) -> Any:
        host = kwargs.get("host", args[1] if len(args) > 1 else None)
        port = kwargs.get("port", args[2] if len(args) > 2 else None)
        attempts.append((host, port))
        if off_loopback([(host, port)]):
            raise AssertionError(f"a connection to {host} was attempted")
        return await real(*args, **kwargs)

    real_sock_connect = loop.sock_connect

    async def sock_spy(sock: Any, address: Any) -> Any:
        # aiohttp connects through aiohappyeyeballs, which uses sock_connect.
        attempts.append((address[0], address[1]))
        if off_loopback([address]):
            raise AssertionError(f"a connection to {address[0]} was attempted")
        return await real_sock_connect(sock, address)

    loop.create_connection = spy  # type: ignore[method-assign]
    loop.sock_connect = sock_spy  # type: ignore[method-assign]
    yield attempts
    loop.create_connection = real  # type: ignore[method-assign]
    loop.sock_connect = real_sock_connect  # type: ignore[method-assign]


def off_loopback(hosts: list[Any]) -> list[Any]:
    """The connection attempts that left the machine (the test's own are loopback)."""
    return [h for h in hosts if h[0] is not None and not ipaddress.ip_address(h[0]).is_loopback]


@pytest.fixture
async def guarded(tmp_path: Path, connection_spy: list[Any]) -> AsyncIterator[httpx.AsyncClient]:
    """A sidecar with the default policy (no private targets) and fake DNS."""
    settings = make_settings(tmp_path, allow_private=False)
    app = Sidecar(settings, egress=EgressPolicy(resolver=FakeResolver()))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


@pytest.mark.parametrize("host", sorted(FAKE_DNS))
async def test_resolved_forbidden_ranges_are_403_without_connecting(
    guarded: httpx.AsyncClient, connection_spy: list[Any], host: str
) -> None:
    response = await guarded.get("/", headers={"X-Target-URL": f"http://{host}/x"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "egress_denied"
    assert host in response.json()["error"]["message"]
    assert off_loopback(connection_spy) == []


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/",
        "http://[::ffff:192.168.0.1]/",
        "http://100.100.100.100/",
        "http://0x7f.1/",
        "http://0.0.0.0/",
    ],
)
async def test_literal_forbidden_targets_are_403(
    guarded: httpx.AsyncClient, connection_spy: list[Any], target: str
) -> None:
    response = await guarded.get("/", headers={"X-Target-URL": target})
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "egress_denied"
    assert off_loopback(connection_spy) == []


async def test_failover_urls_are_vetted_too(
    guarded: httpx.AsyncClient, connection_spy: list[Any]
) -> None:
    response = await guarded.get(
        "/", headers={"X-Target-URL": "http://private.test/", "X-Failover-URL": "http://ula.test/"}
    )
    assert response.status_code == 403
    assert off_loopback(connection_spy) == []


async def test_loopback_upstream_refused_by_default(
    guarded: httpx.AsyncClient, upstream: Upstream
) -> None:
    for spelling in (upstream.url, upstream.url.replace("127.0.0.1", "localhost")):
        response = await guarded.get("/", headers={"X-Target-URL": spelling})
        assert response.status_code == 403, spelling
    assert upstream.seen == []


async def test_allow_hosts_lets_a_loopback_upstream_through(
    tmp_path: Path, upstream: Upstream
) -> None:
    settings = make_settings(tmp_path, allow_private=False, allow_hosts=("127.0.0.1",))
    app = Sidecar(settings)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/", headers={"X-Target-URL": upstream.url})
    assert response.status_code == 200
    assert len(upstream.seen) == 1


async def test_spy_sees_upstream_connections(
    tmp_path: Path, upstream: Upstream, connection_spy: list[Any]
) -> None:
    """The spy is not blind: a loopback upstream connection shows up in it."""
    app = Sidecar(make_settings(tmp_path), egress=EgressPolicy(allow_private=True))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        await http.get("/", headers={"X-Target-URL": upstream.url})
    port = int(upstream.url.rsplit(":", 1)[1])
    assert ("127.0.0.1", port) in connection_spy
    assert len(upstream.seen) == 1


async def test_redirects_are_not_followed(client: httpx.AsyncClient, upstream: Upstream) -> None:
    from tests.support.upstream import reply

    upstream.then(reply(302, b"", headers={"Location": "http://169.254.169.254/"}))
    response = await client.get("/", headers={"X-Target-URL": upstream.url})
    assert response.status_code == 302
    assert response.headers["location"] == "http://169.254.169.254/"
    assert len(upstream.seen) == 1
