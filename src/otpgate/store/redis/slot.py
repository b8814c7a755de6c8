"""The one hash slot every key otpgate writes to on Redis Cluster.

Every key starts with the key prefix, and on Cluster that prefix carries a hash tag
(``{otpgate}:``): Redis hashes a key by the first ``{...}`` in it, so every key,
including those a script builds itself (a resumed verification's record), is in
one slot, and each store operation stays one atomic script. ``cluster_prefix`` is
the rule: a prefix with a hash tag is used as it is, one without is wrapped
(``otpgate:`` -> ``{otpgate}:``), and one with a brace that is not a whole tag is
refused, since its keys would scatter over slots. Plain Python: the settings check a
prefix with it without loading a Redis client.
"""

from __future__ import annotations

import binascii

SLOTS = 16384


class PrefixError(ValueError):
    """A key prefix whose keys would not share one slot on Redis Cluster."""


def hash_tag(key: str) -> str | None:
    """What Redis hashes ``key`` by when it has a hash tag: between the first ``{`` and
    the first ``}`` after it, when that is not empty; else None (the whole key)."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def cluster_prefix(prefix: str) -> str:
    """The prefix keys are written under on Redis Cluster: ``prefix`` when it carries a
    hash tag, else ``prefix`` wrapped in one before its trailing colons
    (``otpgate:`` -> ``{otpgate}:``). PrefixError for one that cannot be made one slot."""
    if hash_tag(prefix) is not None:
        return prefix
    if "{" in prefix or "}" in prefix:
        raise PrefixError(
            "a brace that is not a whole hash tag; on Redis Cluster write the tag whole,"
            " e.g. {otpgate}:, or no brace at all (otpgate:, which becomes {otpgate}:)"
        )
    body = prefix.rstrip(":")
    if not body:
        raise PrefixError(
            "Redis Cluster needs a prefix to make the hash tag of every key, e.g. otpgate:"
        )
    return f"{{{body}}}{prefix[len(body) :]}"


def key_slot(key: str) -> int:
    """The hash slot of ``key`` (CRC16 of its hash tag or of the whole key), as Redis
    computes it."""
    tag = hash_tag(key)
    return binascii.crc_hqx((key if tag is None else tag).encode(), 0) % SLOTS
