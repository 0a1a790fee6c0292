"""Egress policy (SPEC §3): the range table, odd spellings, allow lists, cache, aiohttp wiring.

Never a real DNS lookup and never a connection beyond loopback: names go
through FakeResolver, and the aiohttp tests watch the event loop's connect
calls.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from sidecar.errors import EgressDenied, UpstreamUnreachable
from sidecar.outbound.transport import AiohttpStreamingTransport
from sidecar.security import egress
from sidecar.security.egress import (
    IPV4_RANGES,
    IPV6_RANGES,
    EgressPolicy,
    OpenEgress,
    SystemResolver,
    VettedResolver,
    check_address,
    parse_ip_literal,
)

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


class FakeResolver:
    """Answers from a table and counts lookups; a missing name fails like getaddrinfo."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = dict(answers or {})
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.answers[host])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(answers: dict[str, list[str]] | None = None, **kwargs: Any) -> EgressPolicy:
    return EgressPolicy(resolver=FakeResolver(answers), **kwargs)


def samples(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    """The first, a middle and the last address of a range."""
    middle = network.network_address + network.num_addresses // 2
    found = [str(network.network_address), str(middle), str(network.broadcast_address)]
    return list(dict.fromkeys(found))


ALL_RANGES: list[tuple[Any, str]] = [*IPV4_RANGES, *IPV6_RANGES]


# -- the range table ------------------------------------------------------------------

REQUIRED_RANGES = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "255.255.255.255/32", "::/128", "::1/128", "fe80::/10", "fc00::/7", "ff00::/8",
    "2001:db8::/32", "100::/64",
]  # fmt: skip


@pytest.mark.parametrize("cidr", REQUIRED_RANGES)
def test_table_lists_every_range_the_spec_names(cidr: str) -> None:
    tables = [network for network, _ in ALL_RANGES]
    assert ipaddress.ip_network(cidr) in tables


@pytest.mark.parametrize(
    ("network", "address"),
    [(net, address) for net, _ in ALL_RANGES for address in samples(net)],
    ids=str,
)
async def test_every_range_in_the_table_is_refused(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network, address: str
) -> None:
    label = check_address(ipaddress.ip_address(address))
    # A more specific range inside `network` (255.255.255.255 in 240/4) may name it.
    named = [net for net, _ in ALL_RANGES if label and f"({net})" in label]
    assert named and named[0].subnet_of(network)
    with pytest.raises(EgressDenied) as caught:
        await policy({"target.test": [address]}).vet("target.test", 443)
    assert caught.value.code == "egress_denied" and caught.value.status == 403
    assert f"{ipaddress.ip_address(address)} (target.test) is in a" in caught.value.message


async def test_message_names_the_host_and_the_range() -> None:
    with pytest.raises(EgressDenied) as caught:
        await policy({"api.example.com": ["10.0.0.5"]}).vet("api.example.com", 443)
    assert caught.value.message == (
        "10.0.0.5 (api.example.com) is in a private range (10.0.0.0/8); "
        "allow it with allow_private or allow_hosts"
    )


@pytest.mark.parametrize(
    ("address", "inner_range"),
    [
        ("::ffff:127.0.0.1", "127.0.0.0/8"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "169.254.0.0/16"),
        ("::ffff:0:a00:1", "10.0.0.0/8"),  # IPv4-translated
        ("::7f00:1", "127.0.0.0/8"),  # IPv4-compatible
        ("::a9fe:a9fe", "169.254.0.0/16"),
        ("64:ff9b::a00:1", "10.0.0.0/8"),  # NAT64
        ("64:ff9b::7f00:1", "127.0.0.0/8"),
        ("64:ff9b:1::a00:1", "10.0.0.0/8"),  # local-use NAT64, /96 placement
        ("64:ff9b:1:a00:0:100::", "10.0.0.0/8"),  # /48 placement
        ("64:ff9b:1:a:0:1::", "10.0.0.0/8"),  # /56 placement
        ("64:ff9b:1:0:a:0:100:0", "10.0.0.0/8"),  # /64 placement
        ("2002:7f00:1::", "127.0.0.0/8"),  # 6to4
        ("2002:c0a8:101::1", "192.168.0.0/16"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.0/8"),  # Teredo, client 127.0.0.1
        ("2001:0:a00:1::1", "10.0.0.0/8"),  # Teredo, server 10.0.0.1
    ],
)
def test_ipv4_inside_ipv6_is_judged_by_the_ipv4(address: str, inner_range: str) -> None:
    label = check_address(ipaddress.ip_address(address))
    assert label is not None and f"({inner_range})" in label


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "1.1.1.1",
        "100.128.0.1",  # just past CGNAT
        "172.32.0.1",  # just past 172.16/12
        "2606:2800:220:1:248:1893:25c8:1946",
        "::ffff:93.184.216.34",
        "64:ff9b::5db8:d822",
        "2002:5db8:d822::1",
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert check_address(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["fec0::1", "4000::1", "::1:0:0:1", "ff02::1"])
def test_ipv6_outside_global_unicast_is_refused(address: str) -> None:
    assert check_address(ipaddress.ip_address(address)) is not None


# -- odd spellings --------------------------------------------------------------------

ODD_LOOPBACK = ["2130706433", "0x7f.1", "0177.0.0.1", "127.1", "0x7f000001", "127.0.0.1.",
                "0X7F.0.0.1", "0x7f.0.0x0.01", "017700000001", "127.0.1", "127.0.0.1"]  # fmt: skip


@pytest.mark.parametrize("host", ODD_LOOPBACK)
async def test_odd_ipv4_spellings_read_as_libc_does_and_are_refused(host: str) -> None:
    assert parse_ip_literal(host) == LOOPBACK
    resolver = FakeResolver()
    with pytest.raises(EgressDenied, match=r"127\.0\.0\.1 .*loopback range \(127\.0\.0\.0/8\)"):
        await EgressPolicy(resolver=resolver).vet(host, 80)
    assert resolver.calls == []  # an IP literal never reaches DNS


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[fe80::1%25eth0]", "fe80::1%eth0"),
        ("10.0.0.1", "10.0.0.1"),
        ("1.256", "1.0.1.0"),  # the last part fills the remaining bytes
        ("0xa.0x0.0x0.0x1", "10.0.0.1"),
    ],
)
def test_parse_ip_literal(host: str, expected: str) -> None:
    assert parse_ip_literal(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "host",
    ["example.com", "", "1.2.3.4.5", "256.1.1.1", "1.16777216", "08.0.0.1", "1..2",
     "0x7g.1", "[1.2.3.4]", "[nope]", "١٢٧.0.0.1", "1_0.0.0.1", " 10.0.0.1", "127.0.0.1.."],
)  # fmt: skip
def test_parse_ip_literal_leaves_names_alone(host: str) -> None:
    assert parse_ip_literal(host) is None


@pytest.mark.parametrize("host", ["[::1]", "::ffff:127.0.0.1", "[::ffff:a9fe:a9fe]", "[fe80::1]"])
async def test_ipv6_literals_are_refused_without_dns(host: str) -> None:
    resolver = FakeResolver()
    with pytest.raises(EgressDenied):
        await EgressPolicy(resolver=resolver).vet(host, 80)
    assert resolver.calls == []


# -- vetting names --------------------------------------------------------------------


async def test_public_name_is_vetted_to_all_its_addresses() -> None:
    answers = {"example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]}
    assert await policy(answers).vet("example.com", 443) == answers["example.com"]


async def test_public_ip_literal_needs_no_dns() -> None:
    resolver = FakeResolver()
    vetted = await EgressPolicy(resolver=resolver).vet("93.184.216.34", 443)
    assert vetted == ["93.184.216.34"] and resolver.calls == []


async def test_duplicate_answers_are_collapsed() -> None:
    answers = {"example.com": ["93.184.216.34", "93.184.216.34"]}
    assert await policy(answers).vet("example.com", 443) == ["93.184.216.34"]


@pytest.mark.parametrize("internal", ["10.0.0.1", "127.0.0.1", "169.254.169.254", "::1"])
async def test_one_forbidden_address_among_public_ones_refuses_the_name(internal: str) -> None:
    answers = {"rebind.test": ["93.184.216.34", internal, "1.1.1.1"]}
    with pytest.raises(EgressDenied, match=r"\(rebind\.test\)"):
        await policy(answers).vet("rebind.test", 443)


async def test_unresolvable_name_is_upstream_unreachable() -> None:
    with pytest.raises(UpstreamUnreachable, match=r"^could not resolve nowhere\.test$") as caught:
        await policy().vet("nowhere.test", 443)
    assert caught.value.status == 502


@pytest.mark.parametrize("answer", [[], ["not-an-address"]])
async def test_empty_or_garbled_answers_are_upstream_unreachable(answer: list[str]) -> None:
    with pytest.raises(UpstreamUnreachable):
        await policy({"odd.test": answer}).vet("odd.test", 443)


async def test_empty_host_is_upstream_unreachable() -> None:
    with pytest.raises(UpstreamUnreachable):
        await policy().vet("", 443)


async def test_system_resolver_reads_a_numeric_host_without_dns() -> None:
    assert await SystemResolver().resolve("127.0.0.1", 80) == ["127.0.0.1"]


# -- allow_private and allow_hosts ------------------------------------------------------


@pytest.mark.parametrize("address", ["10.0.0.1", "127.0.0.1", "100.64.0.1", "::1", "fd00::1"])
async def test_allow_private_lifts_the_private_ranges(address: str) -> None:
    answers = {"dev.test": [address]}
    assert await policy(answers, allow_private=True).vet("dev.test", 80) == [address]
    assert await policy(allow_private=True).vet(address, 80) == [address]


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "::ffff:169.254.169.254"])
async def test_allow_private_never_opens_cloud_metadata(address: str) -> None:
    answers = {"metadata.test": [address]}
    with pytest.raises(EgressDenied, match=r"link-local.*; allow it with allow_hosts$"):
        await policy(answers, allow_private=True).vet("metadata.test", 80)


@pytest.mark.parametrize("host", ["upstream.test", "UPSTREAM.Test", "upstream.test."])
async def test_allowed_host_name_may_resolve_anywhere(host: str) -> None:
    answers = {host: ["10.0.0.1", "169.254.169.254"]}
    allowed = policy(answers, allow_hosts=["Upstream.TEST"])
    assert await allowed.vet(host, 80) == ["10.0.0.1", "169.254.169.254"]


async def test_allowed_host_name_allows_only_that_name() -> None:
    answers = {"upstream.test": ["10.0.0.1"], "other.test": ["10.0.0.1"]}
    with pytest.raises(EgressDenied):
        await policy(answers, allow_hosts=["upstream.test"]).vet("other.test", 80)
    with pytest.raises(EgressDenied):  # a name entry does not open its address
        await policy(allow_hosts=["upstream.test"]).vet("10.0.0.1", 80)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("api.corp.test", True),
        ("a.b.corp.test", True),
        ("API.Corp.Test.", True),
        ("corp.test", False),  # the apex is not a subdomain
        ("evilcorp.test", False),
        ("corp.test.evil.test", False),
    ],
)
async def test_wildcard_entry_allows_subdomains(host: str, allowed: bool) -> None:
    checker = policy({host: ["10.0.0.1"]}, allow_hosts=["*.corp.test"])
    if allowed:
        assert await checker.vet(host, 80) == ["10.0.0.1"]
    else:
        with pytest.raises(EgressDenied):
            await checker.vet(host, 80)


@pytest.mark.parametrize(
    ("entry", "inside", "outside"),
    [
        ("10.0.0.5", "10.0.0.5", "10.0.0.6"),
        ("0xa.0.0.5", "10.0.0.5", "10.0.0.6"),
        ("[::1]", "::1", "fd00::1"),
        ("10.1.0.0/16", "10.1.2.3", "10.2.0.1"),
        ("10.1.0.0/16", "::ffff:10.1.2.3", "::ffff:10.2.0.1"),
        ("10.1.2.3/16", "10.1.200.1", "10.0.0.1"),  # host bits are ignored
        ("fd00::/8", "fd12::1", "fc00::1"),
        ("169.254.169.254/32", "169.254.169.254", "169.254.0.1"),
    ],
)
async def test_ip_and_cidr_entries_allow_addresses_inside(
    entry: str, inside: str, outside: str
) -> None:
    checker = policy({"in.test": [inside], "out.test": [outside]}, allow_hosts=[entry])
    assert await checker.vet("in.test", 80) == [str(ipaddress.ip_address(inside))]
    assert await checker.vet(inside, 80) == [str(ipaddress.ip_address(inside))]
    with pytest.raises(EgressDenied):
        await checker.vet("out.test", 80)


async def test_cidr_entry_and_public_addresses_mix() -> None:
    checker = policy({"split.test": ["93.184.216.34", "10.1.0.9"]}, allow_hosts=["10.1.0.0/16"])
    assert await checker.vet("split.test", 80) == ["93.184.216.34", "10.1.0.9"]


@pytest.mark.parametrize("entry", ["*", "*.", "foo.*.test", "a b", "", "10.0.0.0/33", "x/8"])
def test_bad_allow_hosts_entry_is_named(entry: str) -> None:
    with pytest.raises(ValueError, match="allow_hosts"):
        EgressPolicy(allow_hosts=[entry])


# -- the cache ------------------------------------------------------------------------


async def test_cache_hit_skips_the_resolver_until_it_expires() -> None:
    clock = FakeClock()
    resolver = FakeResolver({"example.com": ["93.184.216.34"]})
    checker = EgressPolicy(resolver=resolver, cache_seconds=10, monotonic=clock)
    await checker.vet("example.com", 443)
    clock.now = 1009.5
    assert await checker.vet("example.com", 443) == ["93.184.216.34"]
    assert len(resolver.calls) == 1
    await checker.vet("example.com", 80)  # another port is another entry
    assert len(resolver.calls) == 2
    clock.now = 1010.0
    await checker.vet("example.com", 443)
    assert len(resolver.calls) == 3


async def test_each_fresh_resolution_is_vetted_again() -> None:
    clock = FakeClock()
    resolver = FakeResolver({"rebind.test": ["93.184.216.34"]})
    checker = EgressPolicy(resolver=resolver, cache_seconds=10, monotonic=clock)
    await checker.vet("rebind.test", 443)
    resolver.answers["rebind.test"] = ["127.0.0.1"]  # the attacker's second answer
    clock.now += 10
    with pytest.raises(EgressDenied):
        await checker.vet("rebind.test", 443)


async def test_refusals_are_not_cached() -> None:
    resolver = FakeResolver({"internal.test": ["10.0.0.1"]})
    checker = EgressPolicy(resolver=resolver, monotonic=FakeClock())
    for _ in range(2):
        with pytest.raises(EgressDenied):
            await checker.vet("internal.test", 443)
    assert len(resolver.calls) == 2


async def test_zero_cache_seconds_resolves_every_time() -> None:
    resolver = FakeResolver({"example.com": ["93.184.216.34"]})
    checker = EgressPolicy(resolver=resolver, cache_seconds=0, monotonic=FakeClock())
    await checker.vet("example.com", 443)
    await checker.vet("example.com", 443)
    assert len(resolver.calls) == 2


async def test_callers_cannot_change_the_cached_answer() -> None:
    checker = policy({"example.com": ["93.184.216.34"]}, monotonic=FakeClock())
    (await checker.vet("example.com", 443)).append("10.0.0.1")
    assert await checker.vet("example.com", 443) == ["93.184.216.34"]


async def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(egress, "_CACHE_LIMIT", 3)
    clock = FakeClock()
    resolver = FakeResolver({f"h{n}.test": ["93.184.216.34"] for n in range(5)})
    checker = EgressPolicy(resolver=resolver, monotonic=clock)
    for n in range(5):
        await checker.vet(f"h{n}.test", 443)
    await checker.vet("h4.test", 443)
    assert len(resolver.calls) == 5  # the newest is still cached
    await checker.vet("h0.test", 443)
    assert len(resolver.calls) == 6  # the oldest was dropped


# -- OpenEgress ------------------------------------------------------------------------


async def test_open_egress_resolves_and_allows_everything() -> None:
    resolver = FakeResolver({"internal.test": ["10.0.0.1", "169.254.169.254"]})
    open_egress = OpenEgress(resolver)
    assert await open_egress.vet("internal.test", 80) == ["10.0.0.1", "169.254.169.254"]
    assert await open_egress.vet("0x7f.1", 80) == ["127.0.0.1"]
    assert len(resolver.calls) == 1
    with pytest.raises(UpstreamUnreachable):
        await open_egress.vet("nowhere.test", 80)


# -- VettedResolver --------------------------------------------------------------------

DUAL = {"dual.test": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]}


async def test_vetted_resolver_builds_aiohttp_results() -> None:
    results = await VettedResolver(policy(DUAL)).resolve("dual.test", 443, socket.AF_UNSPEC)
    assert results == [
        {"hostname": "dual.test", "host": "93.184.216.34", "port": 443,
         "family": socket.AF_INET, "proto": socket.IPPROTO_TCP,
         "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV},
        {"hostname": "dual.test", "host": "2606:2800:220:1:248:1893:25c8:1946", "port": 443,
         "family": socket.AF_INET6, "proto": socket.IPPROTO_TCP,
         "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("family", "hosts"),
    [
        (socket.AF_INET, ["93.184.216.34"]),
        (socket.AF_INET6, ["2606:2800:220:1:248:1893:25c8:1946"]),
    ],
)
async def test_vetted_resolver_keeps_the_asked_family(
    family: socket.AddressFamily, hosts: list[str]
) -> None:
    results = await VettedResolver(policy(DUAL)).resolve("dual.test", 443, family)
    assert [r["host"] for r in results] == hosts


async def test_vetted_resolver_with_nothing_in_the_family_is_unreachable() -> None:
    resolver = VettedResolver(policy({"v4.test": ["93.184.216.34"]}))
    with pytest.raises(UpstreamUnreachable, match="IPv6"):
        await resolver.resolve("v4.test", 443, socket.AF_INET6)


async def test_vetted_resolver_passes_refusals_through() -> None:
    resolver = VettedResolver(policy({"internal.test": ["10.0.0.1"]}))
    with pytest.raises(EgressDenied):
        await resolver.resolve("internal.test", 443, socket.AF_UNSPEC)
    await resolver.close()


# -- through aiohttp, with the event loop's connect calls watched ------------------------


class ConnectionSpy:
    """Records every outgoing connect the event loop is asked for; refuses them unless `allow`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, allow: bool) -> None:
        self.attempts: list[Any] = []
        self._loop = loop
        self._allow = allow
        self._sock_connect = loop.sock_connect
        self._create_connection = loop.create_connection

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        self.attempts.append(address)
        if not self._allow:
            raise OSError("connection attempted while the spy refuses")
        await self._sock_connect(sock, address)

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        sock = kwargs.get("sock")
        self.attempts.append(sock.getpeername() if sock is not None else args[1:3])
        if not self._allow:
            raise OSError("connection attempted while the spy refuses")
        return await self._create_connection(*args, **kwargs)


@pytest.fixture
def spy_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def install(allow: bool) -> ConnectionSpy:
        loop = asyncio.get_running_loop()
        spy = ConnectionSpy(loop, allow)
        monkeypatch.setattr(loop, "sock_connect", spy.sock_connect)
        monkeypatch.setattr(loop, "create_connection", spy.create_connection)
        return spy

    yield install


@pytest.fixture
async def loopback_server() -> AsyncIterator[int]:
    """A real HTTP server on 127.0.0.1; yields its port."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.host}")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def session_for(egress: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=VettedResolver(egress)))


async def test_refused_name_never_reaches_a_connect(spy_factory: Any) -> None:
    spy = spy_factory(allow=False)
    async with session_for(policy({"internal.test": ["10.0.0.1"]})) as session:
        with pytest.raises(EgressDenied, match=r"10\.0\.0\.1 \(internal\.test\)"):
            await session.get("http://internal.test/")
    assert spy.attempts == []


async def test_refusal_comes_through_the_httpx_transport_unchanged(spy_factory: Any) -> None:
    spy = spy_factory(allow=False)
    transport = AiohttpStreamingTransport(session_for(policy({"internal.test": ["10.0.0.1"]})))
    try:
        with pytest.raises(EgressDenied):
            await transport.handle_async_request(httpx.Request("GET", "http://internal.test/"))
    finally:
        await transport.aclose()
    assert spy.attempts == []


@pytest.mark.parametrize(
    "settings", [{"allow_hosts": ["upstream.test"]}, {"allow_private": True}], ids=str
)
async def test_allowed_name_connects_to_the_vetted_address(
    settings: dict[str, Any], spy_factory: Any, loopback_server: int
) -> None:
    spy = spy_factory(allow=True)
    checker = policy({"upstream.test": ["127.0.0.1"]}, **settings)
    async with session_for(checker) as session:
        async with session.get(f"http://upstream.test:{loopback_server}/hello") as response:
            assert response.status == 200
            assert await response.text() == f"hello upstream.test:{loopback_server}"
    assert spy.attempts and all(a[0] == "127.0.0.1" for a in spy.attempts)


async def test_aiohttp_skips_the_resolver_for_ip_literals(
    spy_factory: Any, loopback_server: int
) -> None:
    """Why callers must vet() the URL's host themselves before sending (upstream.py does).

    A policy that refuses everything, plugged in as the resolver, is never
    asked about http://127.0.0.1/: aiohttp connects straight away.
    """
    spy = spy_factory(allow=True)
    async with session_for(policy()) as session:
        async with session.get(f"http://127.0.0.1:{loopback_server}/hello") as response:
            assert response.status == 200
    assert spy.attempts
    with pytest.raises(EgressDenied):  # the pre-send vet() is what refuses it
        await policy().vet("127.0.0.1", loopback_server)
