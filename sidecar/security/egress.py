"""Egress policy (SPEC §3): which addresses the sidecar may connect to.

A target is refused when any address it resolves to lies in a range of the
explicit table below (loopback, link-local and cloud metadata, private,
CGNAT, documentation, multicast, reserved...). IPv6 forms that carry an IPv4
address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are judged by the
IPv4 address inside. Python's `ipaddress` flags alone are not enough: they
miss 100.64/10 in `is_private`, say nothing about the IPv4 inside most IPv6
forms, and their lists change between Python releases.

Hosts are read the way the C library and browsers read them, so `0x7f.1`,
`2130706433` or `127.1` are 127.0.0.1 here too (`parse_ip_literal`).

DNS rebinding is defeated by connecting only to what was vetted:
`VettedResolver` plugs `vet()` into aiohttp's connector, so the addresses
aiohttp dials are exactly those checked, never the answer of a second lookup.
aiohttp does not ask its resolver about IP-literal hosts, so callers must
also `vet()` the URL's host before sending (upstream.py does); that call is
cached, and for an IP literal involves no DNS at all.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Protocol

from aiohttp.abc import AbstractResolver, ResolveResult

from sidecar.errors import EgressDenied, UpstreamUnreachable

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# First match wins, so a specific range sits before the one containing it.
IPV4_RANGES: list[tuple[IPv4Network, str]] = [
    (IPv4Network("255.255.255.255/32"), "broadcast"),
    (IPv4Network("0.0.0.0/8"), "this-network"),
    (IPv4Network("10.0.0.0/8"), "private"),
    (IPv4Network("100.64.0.0/10"), "shared (CGNAT)"),
    (IPv4Network("127.0.0.0/8"), "loopback"),
    (IPv4Network("169.254.0.0/16"), "link-local (cloud metadata)"),
    (IPv4Network("172.16.0.0/12"), "private"),
    (IPv4Network("192.0.0.0/24"), "IETF protocol assignment"),
    (IPv4Network("192.0.2.0/24"), "documentation"),
    (IPv4Network("192.88.99.0/24"), "6to4 relay anycast"),
    (IPv4Network("192.168.0.0/16"), "private"),
    (IPv4Network("198.18.0.0/15"), "benchmarking"),
    (IPv4Network("198.51.100.0/24"), "documentation"),
    (IPv4Network("203.0.113.0/24"), "documentation"),
    (IPv4Network("224.0.0.0/4"), "multicast"),
    (IPv4Network("240.0.0.0/4"), "reserved"),
]

IPV6_RANGES: list[tuple[IPv6Network, str]] = [
    (IPv6Network("::/128"), "unspecified"),
    (IPv6Network("::1/128"), "loopback"),
    (IPv6Network("fe80::/10"), "link-local"),
    (IPv6Network("fec0::/10"), "site-local (deprecated)"),
    (IPv6Network("fc00::/7"), "unique-local (private)"),
    (IPv6Network("ff00::/8"), "multicast"),
    (IPv6Network("2001:db8::/32"), "documentation"),
    (IPv6Network("2001:2::/48"), "benchmarking"),
    (IPv6Network("2001:10::/28"), "ORCHID (deprecated)"),
    (IPv6Network("100::/64"), "discard-only"),
]

# IPv6 prefixes whose traffic ends up at an IPv4 address carried inside; that
# address is what gets checked (after ::/128 and ::1/128 above, which ::/96
# would otherwise read as 0.0.0.0 and 0.0.0.1).
IPV6_EMBEDDING_IPV4: list[tuple[IPv6Network, str]] = [
    (IPv6Network("::ffff:0:0/96"), "IPv4-mapped"),
    (IPv6Network("::ffff:0:0:0/96"), "IPv4-translated"),
    (IPv6Network("::/96"), "IPv4-compatible"),
    (IPv6Network("64:ff9b::/96"), "NAT64"),
    (IPv6Network("64:ff9b:1::/48"), "local-use NAT64"),
    (IPv6Network("2002::/16"), "6to4"),
    (IPv6Network("2001::/32"), "Teredo"),
]

# Only 2000::/3 is allocated for global unicast; anything else left over is
# IANA-reserved and has no business being an upstream.
_GLOBAL_UNICAST = IPv6Network("2000::/3")

# allow_private is for upstreams on this machine or the LAN; it never opens
# the cloud metadata service, which only an explicit allow_hosts entry does.
_BEYOND_ALLOW_PRIVATE = frozenset({IPv4Network("169.254.0.0/16"), IPv6Network("fe80::/10")})

_CACHE_LIMIT = 4096


def _ipv4_label(ip: IPv4Address) -> tuple[str, IPNetwork] | None:
    for network, kind in IPV4_RANGES:
        if ip in network:
            return f"{kind} range ({network})", network
    return None


def _rfc6052_readings(value: int) -> list[IPv4Address]:
    """The IPv4 address inside a local-use NAT64 address, for every prefix length it allows.

    The operator picks the prefix length (RFC 6052 §2.2: /48, /56, /64, /96
    fit inside 64:ff9b:1::/48); bits 64-71 are skipped and the suffix is zero,
    so a reading counts only where those bits are zero. The caller refuses
    when any reading is forbidden: with a /48-/64 translator the /96 reading
    is mostly 0.0.0.0, so such a site allows its prefix with allow_hosts.
    """
    readings = []
    if not (value >> 56) & 0xFF:
        squeezed = ((value >> 64) << 56) | (value & ((1 << 56) - 1))
        for prefix_len in (48, 56, 64):
            shift = 120 - prefix_len - 32
            if not squeezed & ((1 << shift) - 1):
                readings.append(IPv4Address((squeezed >> shift) & 0xFFFFFFFF))
    # The /96 reading always applies; last, so a message names the better one.
    readings.append(IPv4Address(value & 0xFFFFFFFF))
    return readings


def _embedded_ipv4(ip: IPv6Address, network: IPv6Network) -> list[IPv4Address]:
    value = int(ip)
    if network.prefixlen == 96:
        return [IPv4Address(value & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    return _rfc6052_readings(value)


def _classify(ip: IPAddress) -> tuple[str, IPNetwork] | None:
    """The label of the forbidden range holding `ip`, and the table range behind it."""
    if isinstance(ip, IPv4Address):
        return _ipv4_label(ip)
    for network, kind in IPV6_RANGES:
        if ip in network:
            return f"{kind} range ({network})", network
    for network, kind in IPV6_EMBEDDING_IPV4:
        if ip in network:
            for inner in _embedded_ipv4(ip, network):
                found = _ipv4_label(inner)
                if found is not None:
                    label, inner_network = found
                    return f"{label} as {inner} inside {kind} {network}", inner_network
            return None
    if ip not in _GLOBAL_UNICAST:
        return f"reserved range (outside global unicast {_GLOBAL_UNICAST})", _GLOBAL_UNICAST
    return None


def check_address(ip: IPAddress) -> str | None:
    """The label of the forbidden range `ip` lies in, or None when it is allowed."""
    found = _classify(ip)
    return None if found is None else found[0]


_HEX = re.compile(r"0[xX][0-9a-fA-F]*")
_OCTAL = re.compile(r"0[0-7]+")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _ipv4_number(part: str) -> int | None:
    # ASCII-only patterns: int() alone would take "١٢٧", "1_0" or " 10".
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if _OCTAL.fullmatch(part):
        return int(part, 8)
    if _DECIMAL.fullmatch(part):
        try:
            return int(part)
        except ValueError:  # past Python's int-from-str digit limit
            return None
    return None


def _parse_ipv4(text: str) -> IPv4Address | None:
    """inet_aton()/WHATWG reading: 1-4 parts, each hex/octal/decimal, the last fills the rest."""
    parts = text.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # one trailing dot, as in a fully qualified name
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if any(n is None for n in numbers):
        return None
    *leading, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(leading):
        value |= number << (8 * (3 - index))
    return IPv4Address(value)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells, read as libc and browsers do, or None for a name.

    Takes `[::1]` and `::1`, and IPv4 in every form inet_aton() accepts:
    `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`, `127.0.0.1.`.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" not in host:
        return _parse_ipv4(host)
    try:
        # "%25" is how a zone id is escaped inside a URL (RFC 6874).
        return IPv6Address(host.replace("%25", "%"))
    except ValueError:
        return None


class Resolver(Protocol):
    """Turns a host name into IP address strings."""

    async def resolve(self, host: str, port: int) -> list[str]: ...


class SystemResolver:
    """The operating system's resolver (getaddrinfo), off the event loop's thread."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every TCP address of `host`; raises OSError (socket.gaierror) when there is none."""
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [
            str(sockaddr[0])
            for family, _, _, _, sockaddr in infos
            if family in (socket.AF_INET, socket.AF_INET6)
        ]


async def _addresses(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    """The distinct addresses of `host`, in resolver order; an IP literal needs no DNS."""
    literal = parse_ip_literal(host)
    if literal is not None:
        return [literal]
    if not host:
        raise UpstreamUnreachable("could not resolve an empty host")
    try:
        found = [ipaddress.ip_address(text) for text in await resolver.resolve(host, port)]
    except (OSError, UnicodeError, ValueError) as exc:
        # UnicodeError: an IDNA-invalid name; ValueError: a resolver answer that is no address.
        raise UpstreamUnreachable(f"could not resolve {host}") from exc
    if not found:
        raise UpstreamUnreachable(f"could not resolve {host}")
    return list(dict.fromkeys(found))


class Egress(Protocol):
    """Something that turns a target host into the addresses we may connect to."""

    async def vet(self, host: str, port: int) -> list[str]: ...


class EgressPolicy:
    """SPEC §3: refuse targets in forbidden ranges unless the config allows them.

    `allow_hosts` entries: an exact host name (any case) or `*.example.com`
    (any subdomain depth, not the apex) allows that host whatever it resolves
    to; an IP or CIDR (`10.1.0.0/16`) allows addresses inside it.
    `allow_private` lifts every range except link-local (cloud metadata).
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allow_hosts: Iterable[str] = (),
        resolver: Resolver | None = None,
        cache_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._allow_private = allow_private
        self._names: set[str] = set()
        self._suffixes: list[str] = []
        self._networks: list[IPNetwork] = []
        for entry in allow_hosts:
            self._add_allowed(entry)
        self._resolver: Resolver = resolver if resolver is not None else SystemResolver()
        self._cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._cache: dict[tuple[str, int], tuple[float, tuple[str, ...]]] = {}

    def _add_allowed(self, entry: str) -> None:
        """Sort one allow_hosts entry; raises ValueError naming a bad one."""
        text = entry.strip().lower()
        if "/" in text:
            try:
                self._networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(f"allow_hosts: {entry!r} is not a valid CIDR network") from None
            return
        literal = parse_ip_literal(text)
        if literal is not None:
            self._networks.append(ipaddress.ip_network(literal))
        elif text.startswith("*.") and "*" not in text[2:] and text[2:].strip("."):
            self._suffixes.append(text[1:].rstrip("."))
        elif text and "*" not in text and not any(c.isspace() for c in text):
            self._names.add(text.rstrip("."))
        else:
            raise ValueError(f"allow_hosts: {entry!r} is not a host name, *.domain, IP or CIDR")

    def _name_allowed(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return name in self._names or any(name.endswith(suffix) for suffix in self._suffixes)

    def _refusal(self, ip: IPAddress, host: str) -> str | None:
        """Why `ip` may not be used, or None."""
        mapped = ip.ipv4_mapped if isinstance(ip, IPv6Address) else None
        if any(ip in net or (mapped is not None and mapped in net) for net in self._networks):
            return None
        found = _classify(ip)
        if found is None:
            return None
        label, network = found
        beyond = network in _BEYOND_ALLOW_PRIVATE
        if self._allow_private and not beyond:
            return None
        shown = str(ip) if host.strip("[]").lower() == str(ip) else f"{ip} ({host})"
        how = (
            "allow it with allow_hosts" if beyond else "allow it with allow_private or allow_hosts"
        )
        return f"{shown} is in a {label}; {how}"

    async def vet(self, host: str, port: int) -> list[str]:
        """The addresses of `host` we may connect to; raises EgressDenied if any is forbidden.

        Every address must pass, so a name that also resolves to an internal
        address is refused whichever one the connection would have picked.
        Raises UpstreamUnreachable when `host` does not resolve.
        """
        key = (host, port)
        now = self._monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return list(cached[1])
        addresses = await _addresses(host, port, self._resolver)
        if not self._name_allowed(host):
            for ip in addresses:
                refusal = self._refusal(ip, host)
                if refusal is not None:
                    raise EgressDenied(refusal)
        vetted = tuple(str(ip) for ip in addresses)
        self._remember(key, now + self._cache_seconds, vetted)
        return list(vetted)

    def _remember(self, key: tuple[str, int], expires: float, vetted: tuple[str, ...]) -> None:
        # Target hosts come from requests, so the cache is bounded: drop the
        # expired entries, then the oldest, rather than grow without end.
        if self._cache_seconds <= 0:
            return
        if len(self._cache) >= _CACHE_LIMIT:
            now = self._monotonic()
            for stale in [k for k, (until, _) in self._cache.items() if until <= now]:
                del self._cache[stale]
            while len(self._cache) >= _CACHE_LIMIT:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = (expires, vetted)


class OpenEgress:
    """Resolves and allows everything: `mirapi curl`, whose user typed the URL (SPEC §3)."""

    def __init__(self, resolver: Resolver | None = None) -> None:
        self._resolver: Resolver = resolver if resolver is not None else SystemResolver()

    async def vet(self, host: str, port: int) -> list[str]:
        """Every address of `host`; raises UpstreamUnreachable when it does not resolve."""
        return [str(ip) for ip in await _addresses(host, port, self._resolver)]


class VettedResolver(AbstractResolver):
    """aiohttp resolver answering with vetted addresses only, so aiohttp dials nothing else.

    Errors from `vet()` (EgressDenied, UpstreamUnreachable) are not OSError,
    so aiohttp lets them through unwrapped, and httpx-aiohttp re-raises them
    as they are.
    """

    def __init__(self, egress: Egress) -> None:
        self._egress = egress

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """ResolveResult dicts for the vetted addresses of `host` in `family` (0: any)."""
        results: list[ResolveResult] = []
        for address in await self._egress.vet(host, port):
            found = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, found):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=port,
                    family=found,
                    proto=socket.IPPROTO_TCP,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not results:
            wanted = "IPv6" if family == socket.AF_INET6 else "IPv4"
            raise UpstreamUnreachable(f"could not resolve {host} to an {wanted} address")
        return results

    async def close(self) -> None:
        """Nothing to release: the wrapped policy owns no sockets."""
