"""Client addresses: who is believed, and which budget an address draws on."""

from __future__ import annotations

import pytest

from otpgate.http.client_ip import ClientIpResolver


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
        ("not:an:address", "not:an:address"),
    ],
)
def test_limit_key_is_the_ipv4_address_or_the_ipv6_prefix(address: str, key: str) -> None:
    assert ClientIpResolver().limit_key(address) == key


def test_prefix_length_is_configurable() -> None:
    resolver = ClientIpResolver(ipv6_prefix_length=56)
    assert resolver.limit_key("2001:db8:1:2ff::1") == "2001:db8:1:200::/56"
    assert ClientIpResolver(ipv6_prefix_length=128).limit_key("2001:db8::1") == "2001:db8::1/128"


def test_an_ipv4_mapped_proxy_is_trusted_as_its_ipv4_address() -> None:
    resolver = ClientIpResolver(["10.0.0.0/8"])
    assert resolver.resolve("::ffff:10.1.2.3", "2001:db8::5") == "2001:db8::5"
    assert resolver.resolve("::ffff:192.0.2.1", "2001:db8::5") == "::ffff:192.0.2.1"
