"""Which address a request came from, for per-IP limits.

X-Forwarded-For is believed only when the direct peer is a configured proxy;
otherwise anyone could buy a fresh limit by forging the header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientIpResolver:
    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in trusted_proxies
        )

    def _is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
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
