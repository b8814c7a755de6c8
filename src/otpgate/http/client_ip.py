"""Which address a request came from, and which budget it draws on.

X-Forwarded-For is believed only when the direct peer is a configured proxy;
otherwise anyone could buy a fresh limit by forging the header.

Per-IP limits key IPv4 clients by address, and IPv6 clients by their prefix
(IPV6_PREFIX_LENGTH, /64 by default): one subscriber or host is routinely given a
whole /64, so keying by the full address would give it 2^64 fresh budgets. An
IPv4-mapped IPv6 address (``::ffff:198.51.100.7``) counts as its IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientIpResolver:
    def __init__(self, trusted_proxies: Iterable[str] = (), ipv6_prefix_length: int = 64) -> None:
        self._trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in trusted_proxies
        )
        self.limit_key: Callable[[str], str] = _limit_keys(ipv6_prefix_length)

    def _is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._trusted)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str:
        """Walk X-Forwarded-For from the right, skipping trusted proxies."""
        address = peer or "unknown"
        if not forwarded_for or not self._is_trusted(address):
            return address
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            if not hop:
                break
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # garbage in the header: stop at the last address we trust
            address = hop
            if not self._is_trusted(hop):
                break
        return address


def _limit_keys(prefix_length: int) -> Callable[[str], str]:
    @lru_cache(maxsize=16_384)
    def limit_key(address: str) -> str:
        """The scope a client's per-IP limits count in: an IPv4 address or an IPv6 prefix."""
        if ":" not in address:
            return address  # IPv4, or not an address at all ("unknown")
        try:
            ip = ipaddress.IPv6Address(address.partition("%")[0])
        except ValueError:
            return address
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, prefix_length), strict=False))

    return limit_key
