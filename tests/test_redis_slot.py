"""Redis Cluster's one slot: the prefix rule and Redis's own slot arithmetic."""

from __future__ import annotations

import binascii

import pytest

from otpgate.store.redis.slot import PrefixError, cluster_prefix, hash_tag, key_slot


@pytest.mark.parametrize(
    ("prefix", "written"),
    [
        ("otpgate:", "{otpgate}:"),
        ("otpgate", "{otpgate}"),
        ("app:otp::", "{app:otp}::"),
        ("{otpgate}:", "{otpgate}:"),  # a hash tag already: as it is
        ("app:{otp}:", "app:{otp}:"),
        ("{a}{b}:", "{a}{b}:"),  # the first tag wins, as in Redis
    ],
)
def test_cluster_prefix_gives_every_key_one_hash_tag(prefix: str, written: str) -> None:
    assert cluster_prefix(prefix) == written
    keys = [f"{written}{{+12125550123}}:code", f"{written}{{VE1}}:ver", f"{written}{{defence}}:x"]
    assert {key_slot(k) for k in keys} == {key_slot(written)}


def test_key_slot_is_redis_own() -> None:
    """The CRC16 of the hash tag modulo 16384, as in the cluster specification's table."""
    assert key_slot("123456789") == 0x31C3 % 16384  # the specification's test vector
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("foo{}{bar}") == key_slot_whole("foo{}{bar}")
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert hash_tag("{otpgate}:{+1}:code") == "otpgate"
    assert hash_tag("{}x") is None


def key_slot_whole(key: str) -> int:
    return binascii.crc_hqx(key.encode(), 0) % 16384


@pytest.mark.parametrize("prefix", ["", ":", "otp{gate:", "otp{}gate:", "otp}gate:"])
def test_a_prefix_that_cannot_be_one_slot_is_refused(prefix: str) -> None:
    with pytest.raises(PrefixError):
        cluster_prefix(prefix)
