"""Where the factor secrets' encryption keys come from.

Production must set FACTOR_ENCRYPTION_KEYS (the settings refuse to start without it).
In development a random key is created once and kept on disk, as the hash key is
(``hash_key.py``), so enrolled factors survive a restart.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from otpgate.config.credentials import parse_encryption_keys, read_key_file
from otpgate.config.key_file import make_once
from otpgate.config.settings import Settings
from otpgate.credentials.cipher import KEY_BYTES

DEV_KEY_ID = "dev"


def load_factor_keys(settings: Settings) -> dict[str, bytes]:
    if settings.factor_encryption_keys is not None:
        return parse_encryption_keys(settings.factor_encryption_keys.get_secret_value())
    path = settings.factor_encryption_key_file
    if settings.production and not path.exists():
        raise ValueError(f"{path} does not exist (production never makes a key)")
    return {DEV_KEY_ID: _dev_key(path)}


def _dev_key(path: Path) -> bytes:
    make_once(path, lambda: base64.b64encode(secrets.token_bytes(KEY_BYTES)))
    return read_key_file(path)
