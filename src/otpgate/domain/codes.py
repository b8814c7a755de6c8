"""Code generation and the keyed hash that is all the store ever sees."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def generate_code(length: int) -> str:
    """A uniformly random numeric code; leading zeros are allowed (full keyspace)."""
    return f"{secrets.randbelow(10**length):0{length}d}"


class CodeHasher:
    """HMAC-SHA256 keyed with the server secret, bound to the phone number and the
    purpose the code was requested for.

    Binding to the phone means equal codes for two phones hash differently, and
    a leaked store cannot be brute-forced offline without the key. Binding to the
    purpose makes a code for ``login`` fail for ``transfer:1`` by the same compare
    as a wrong code; no purpose hashes as codes always have.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("hash key must be at least 16 bytes")
        self._key = key

    def digest(self, phone: str, code: str, purpose: str | None = None) -> bytes:
        # A purpose never holds NUL (``purpose.PURPOSE``), so the fields cannot run together.
        message = f"{phone}\x00{code}" if purpose is None else f"{phone}\x00{code}\x00{purpose}"
        return hmac.new(self._key, message.encode(), hashlib.sha256).digest()

    def matches(self, stored: bytes, phone: str, code: str, purpose: str | None = None) -> bool:
        return hmac.compare_digest(stored, self.digest(phone, code, purpose))

    def __repr__(self) -> str:
        return "CodeHasher(key=<redacted>)"
