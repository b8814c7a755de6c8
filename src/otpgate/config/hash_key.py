"""Where the code-hashing key comes from.

Production must set OTP_HASH_SECRET, or OTP_HASH_SECRET_FILE naming a file that holds
it (``otpgate init`` writes one); the settings refuse to start without either. In
development a random key is created once and kept on disk, so codes survive a restart
and every worker on the host hashes with the same key.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from otpgate.config.key_file import make_once
from otpgate.config.settings import Settings


def load_hash_key(settings: Settings) -> bytes:
    if settings.otp_hash_secret is not None:
        return settings.otp_hash_secret.get_secret_value().encode()
    if settings.production:
        # Never made here: every instance sharing the store needs the same key.
        return _read(settings.otp_hash_secret_file)
    return _dev_key(settings.otp_hash_secret_file)


def _dev_key(path: Path) -> bytes:
    make_once(path, lambda: secrets.token_urlsafe(48).encode())
    return _read(path)


def _read(path: Path) -> bytes:
    key = path.read_text().strip().encode()
    if len(key) < 32:
        raise ValueError(f"OTP_HASH_SECRET_FILE {path} holds a key shorter than 32 characters")
    return key
