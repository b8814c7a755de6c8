"""RFC 6238 time-based codes: the secret, the ``otpauth://`` URI an authenticator app
reads, and which time step a code belongs to (pyotp does the HMAC arithmetic).

A code is looked for in the steps ``skew`` either side of now, nearest first; the step
it matches is what the store's compare-and-set records, so each step's code is accepted
at most once per factor, and never an earlier step's after a later one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any

import pyotp

from otpgate.domain.factors.values import TotpConfig

# 160 bits, RFC 4226's recommended length for an HMAC-SHA1 secret.
SECRET_BYTES = 20

_DIGESTS: dict[str, Callable[..., Any]] = {
    "SHA1": hashlib.sha1,
    "SHA256": hashlib.sha256,
    "SHA512": hashlib.sha512,
}


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def base32(secret: bytes) -> str:
    """The secret as authenticator apps take it typed in: base32, unpadded."""
    return base64.b32encode(secret).decode().rstrip("=")


def _totp(secret: bytes, config: TotpConfig) -> pyotp.TOTP:
    return pyotp.TOTP(
        base32(secret),
        digits=config.digits,
        digest=_DIGESTS[config.algorithm],
        interval=config.period,
    )


def provisioning_uri(secret: bytes, config: TotpConfig, account: str, issuer: str) -> str:
    """``otpauth://totp/Issuer:account?secret=...&issuer=Issuer`` (with the non-default
    parameters spelled out), for a QR code or a link on the phone itself."""
    return _totp(secret, config).provisioning_uri(name=account, issuer_name=issuer)


def step_at(now: float, config: TotpConfig) -> int:
    return int(now // config.period)


def code_at(secret: bytes, config: TotpConfig, step: int) -> str:
    return _totp(secret, config).at(step * config.period)


def matching_step(secret: bytes, config: TotpConfig, code: str, now: float) -> int | None:
    """The time step within ``skew`` of now whose code ``code`` is, or None. Every
    candidate step is compared (in constant time each), so how long this takes says
    nothing about which step came close."""
    if len(code) != config.digits or not code.isascii() or not code.isdigit():
        return None
    current = step_at(now, config)
    found: int | None = None
    for offset in sorted(range(-config.skew, config.skew + 1), key=abs):
        step = current + offset
        if hmac.compare_digest(code_at(secret, config, step), code) and found is None:
            found = step
    return found
