"""Which addresses the `http` tool may connect to: public ones, unless told otherwise.

A host on the tool's allowlist can still resolve to an address inside the gateway's own
network (127.0.0.1, 10.0.0.5, the cloud metadata service at 169.254.169.254), whether its
DNS records say so from the start or change between two lookups (DNS rebinding). So the
check runs where aiohttp connects: `GuardedResolver` resolves through another resolver and
hands aiohttp only the addresses that pass, which are the very ones it connects to. aiohttp
does not resolve an IP address written in the URL, so `check_literal` checks those.

Refused: unspecified, loopback, link-local, multicast, private, reserved and any other
non-global address, in IPv4 and IPv6, and an IPv6 address that carries a refused IPv4 one
(IPv4-mapped `::ffff:127.0.0.1`, 6to4, NAT64 `64:ff9b::/96`).
"""

from __future__ import annotations

import ipaddress
import socket
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult

_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


class ForbiddenAddress(OSError):
    """The host is, or resolves only to, addresses the tool may not connect to."""


def address_problem(address: IPv4Address | IPv6Address) -> str | None:
    """Why the tool may not connect to `address` ("loopback", "private", ...), or None."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            problem = address_problem(embedded)
            if problem is not None:
                return f"{problem} (as {embedded} inside IPv6)"
            if address.ipv4_mapped is not None:
                return None  # what is reached is the IPv4 address, and it is public
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not public", not address.is_global),
    )
    return next((name for name, refused in checks if refused), None)


def check_literal(host: str) -> None:
    """Raise `ForbiddenAddress` when `host` is an IP address the tool may not connect to."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return  # a name: `GuardedResolver` checks what it resolves to
    problem = address_problem(address)
    if problem is not None:
        raise ForbiddenAddress(f"{host} is a {problem} address")


class GuardedResolver(AbstractResolver):
    """Resolves through `inner` and keeps only the addresses the tool may connect to."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refused: list[str] = []
        for result in results:
            problem = _problem_of(result["host"])
            if problem is None:
                allowed.append(result)
            else:
                refused.append(f"{result['host']} ({problem})")
        if not allowed:
            found = ", ".join(refused) or "no address"
            raise ForbiddenAddress(f"{host} resolves only to addresses it may not reach: {found}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def _problem_of(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return "not an IP address"
    return address_problem(address)


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None
