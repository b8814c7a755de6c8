"""Signing keys for tests, made with ``cryptography`` (not the library that signs), and
the RFC 7638 thumbprint computed by hand, to check the service's ``kid`` against."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PKCS8 = serialization.PrivateFormat.PKCS8
SEC1 = serialization.PrivateFormat.TraditionalOpenSSL  # BEGIN EC PRIVATE KEY


def new_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def pem(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, fmt: serialization.PrivateFormat = PKCS8
) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def write_keys(path: Path, *keys: ec.EllipticCurvePrivateKey) -> Path:
    """A TOKEN_SIGNING_KEYS_FILE holding ``keys`` in order, PKCS#8 each."""
    path.write_bytes(b"".join(pem(key) for key in keys))
    return path


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


def thumbprint(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638 section 3: SHA-256 of the required members, sorted, no whitespace."""
    numbers = key.public_key().public_numbers()
    members = {"crv": "P-256", "kty": "EC", "x": _b64(numbers.x), "y": _b64(numbers.y)}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
