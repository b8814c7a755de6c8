"""Recovery codes: a set shown once, each good for one use, kept only as keyed hashes.

A code is two groups of four characters from an alphabet with nothing to misread (no
``0 o 1 l i``): ``7k4m-q2xh``, 40 bits of randomness, far past what the lockout lets
anyone guess. Typed back, case, spaces and dashes do not matter. The hash is the message
codes' keyed hash (``codes.CodeHasher``, under OTP_HASH_SECRET), bound to the identity
and to a purpose of its own, so a leaked database cannot be searched offline.
"""

from __future__ import annotations

import secrets

from otpgate.domain.codes import CodeHasher

ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
GROUP = 4
GROUPS = 2
# What the hash binds a recovery code to, besides the identity: no message code's
# purpose can be it (a purpose never holds a NUL).
HASH_PURPOSE = "\x00recovery-code"


def generate_codes(count: int) -> list[str]:
    return [
        "-".join("".join(secrets.choice(ALPHABET) for _ in range(GROUP)) for _ in range(GROUPS))
        for _ in range(count)
    ]


def normalize(typed: str) -> str | None:
    """The code as typed, in its canonical form (``xxxx-xxxx``); None when it cannot be
    one."""
    bare = "".join(typed.split()).replace("-", "").lower()
    if len(bare) != GROUP * GROUPS or any(c not in ALPHABET for c in bare):
        return None
    return "-".join(bare[i : i + GROUP] for i in range(0, len(bare), GROUP))


def code_hash(hasher: CodeHasher, identity: str, code: str) -> bytes:
    return hasher.digest(identity, code, HASH_PURPOSE)
