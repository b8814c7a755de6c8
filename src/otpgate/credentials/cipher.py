"""The factor secrets at rest: AES-256-GCM under FACTOR_ENCRYPTION_KEYS.

Each key has an id; the first key encrypts, every key decrypts, so a rotation is: put
a new key first, keep the old one second until no secret is under it any more. The text
kept is ``gcm1:<key id>:<nonce>:<ciphertext and tag>`` (both base64url, no padding), a
fresh 96-bit nonce each time. The associated data is the factor's id and identity, so a
secret copied into another row does not decrypt there.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "gcm1"
KEY_BYTES = 32
NONCE_BYTES = 12


class CipherError(Exception):
    """A stored secret that no configured key opens (its key is gone, or it was
    altered); never says anything of the secret."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SecretCipher:
    def __init__(self, keys: Mapping[str, bytes]) -> None:
        """``keys``: id to 32-byte key, the encrypting one first."""
        if not keys:
            raise ValueError("at least one key is needed")
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id}: must be {KEY_BYTES} bytes")
            if not key_id or ":" in key_id:
                raise ValueError("a key id must be non-empty, without ':'")
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._current = next(iter(keys))

    @property
    def current_key_id(self) -> str:
        return self._current

    def encrypt(self, secret: bytes, context: bytes) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._keys[self._current].encrypt(nonce, secret, context)
        return f"{VERSION}:{self._current}:{_b64(nonce)}:{_b64(sealed)}"

    def decrypt(self, text: str, context: bytes) -> bytes:
        version, key_id, nonce, sealed = ([*text.split(":"), "", "", ""])[:4]
        aead = self._keys.get(key_id)
        if version != VERSION:
            raise CipherError("not a secret this version of otpgate wrote")
        if aead is None:
            raise CipherError(f"encrypted under key {key_id!r}, not in FACTOR_ENCRYPTION_KEYS")
        try:
            return aead.decrypt(_unb64(nonce), _unb64(sealed), context)
        except (InvalidTag, ValueError):
            raise CipherError(f"does not decrypt under key {key_id!r}") from None

    def __repr__(self) -> str:
        return f"SecretCipher(keys={list(self._keys)})"
