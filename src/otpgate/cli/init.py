"""``otpgate init DIR``: the secrets production needs, as files, and the settings naming them.

Each secret is written to a file of its own in DIR (created 0700), mode 0600, and never
over an existing file: when any is there, nothing is written and each is named. The
settings to add are printed; they hold no secret. The hash key and the signing keys are
read from their files (OTP_HASH_SECRET_FILE, TOKEN_SIGNING_KEYS_FILE); the API keys, the
admin key and the Verify v2 token are configured by their SHA-256 (``name:sha256:<hex>``),
so only the caller that presents one needs its file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from otpgate.config.verify_v2 import friendly_name_problem
from otpgate.tokens.keys import generate_pem

# The files' names in DIR.
HASHING_KEY_FILE = "hash-secret"
SIGNING_KEYS_FILE = "token-signing-keys.pem"
API_KEY_FILE = "api-key"
ADMIN_API_KEY_FILE = "admin-api-key"
FACTOR_KEY_FILE = "factor-encryption-key"
V2_CREDENTIAL_FILE = "verify-v2-auth-token"


class InitError(Exception):
    """Nothing was written: the message says why."""


@dataclass(frozen=True, slots=True)
class Secret:
    name: str  # the file's name in DIR
    content: bytes


def _key() -> str:
    """An API key or token: 43 URL-safe characters (256 bits), as API_KEYS accepts."""
    return secrets.token_urlsafe(32)


def _digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def init(directory: Path, *, verify_v2: str | None = None) -> str:
    """Write the secrets into ``directory``; the settings lines to add. ``verify_v2``:
    the friendly name of a Verify v2 service, which also gets an account and a token."""
    if verify_v2 is not None and (problem := friendly_name_problem(verify_v2)):
        raise InitError(f"--verify-v2: the friendly name {problem}")
    api_key, admin_key = _key(), _key()
    files = [
        Secret(HASHING_KEY_FILE, (secrets.token_urlsafe(48) + "\n").encode()),
        Secret(SIGNING_KEYS_FILE, generate_pem()),
        Secret(API_KEY_FILE, (api_key + "\n").encode()),
        Secret(ADMIN_API_KEY_FILE, (admin_key + "\n").encode()),
        Secret(FACTOR_KEY_FILE, base64.b64encode(secrets.token_bytes(32)) + b"\n"),
    ]
    token = _key()
    if verify_v2 is not None:
        files.append(Secret(V2_CREDENTIAL_FILE, (token + "\n").encode()))
    where = _directory(directory)
    _write_all(where, files)
    at: Callable[[str], Path] = where.joinpath
    lines = [
        f"# Written to {where} (mode 0600): the secrets below are read from there, or",
        "# configured by their SHA-256. Add these settings to the environment or .env.",
        "APP_ENV=production",
        "API_AUTH=required",
        f"# The key is in {at(API_KEY_FILE)}: the backend that calls the API sends it.",
        f"API_KEYS=app:{_digest(api_key)}",
        f"# The operators' key (/admin/v1/ and /admin) is in {at(ADMIN_API_KEY_FILE)}.",
        f"ADMIN_API_KEYS=admin:{_digest(admin_key)}",
        f"OTP_HASH_SECRET_FILE={at(HASHING_KEY_FILE)}",
        f"TOKEN_SIGNING_KEYS_FILE={at(SIGNING_KEYS_FILE)}",
        "# The key authenticator apps' secrets are encrypted with (to rotate, see the",
        "# factors page: FACTOR_ENCRYPTION_KEYS lists a new key and this one as dev:<key>).",
        f"FACTOR_ENCRYPTION_KEY_FILE={at(FACTOR_KEY_FILE)}",
    ]
    if verify_v2 is not None:
        lines += [
            f"# Verify v2: the account sid below, and the token in {at(V2_CREDENTIAL_FILE)}.",
            f"VERIFY_V2_ACCOUNT_SID=AC{secrets.token_hex(16)}",
            f"VERIFY_V2_AUTH_TOKEN={_digest(token)}",
            f"VERIFY_V2_SERVICES=VA{secrets.token_hex(16)}:{verify_v2}",
        ]
    lines += [
        "# Fill in: the ISO codes of the countries codes may be sent to (US,CA,GB), or *",
        "# for all; check-config refuses it empty.",
        "ALLOWED_COUNTRIES=",
        "# SMS goes out through Amazon SNS unless SMS_PROVIDER says otherwise;",
        "# `otpgate check-config` lists whatever else is missing.",
    ]
    return "\n".join(lines)


def _directory(directory: Path) -> Path:
    """``directory``, created 0700 when missing; its absolute path."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InitError(f"cannot create {directory}: {exc.strerror}") from None
    if not directory.is_dir():
        raise InitError(f"{directory} is not a directory")
    return directory.resolve()


def _write_all(directory: Path, files: list[Secret]) -> None:
    """Every file or none: an existing one is named and nothing is written; a file
    created here is removed again if a later one cannot be written."""
    existing = [str(directory / f.name) for f in files if (directory / f.name).exists()]
    if existing:
        raise InitError(
            "refusing to overwrite " + ", ".join(existing) + " (nothing was written);"
            " move it away, or name another directory"
        )
    written: list[Path] = []
    try:
        for secret in files:
            path = directory / secret.name
            _write_new(path, secret.content)
            written.append(path)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise InitError(f"cannot write {directory}: {exc.strerror or exc}") from None


def _write_new(path: Path, content: bytes) -> None:
    """A file that must not exist yet, 0600 whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
        fh.write(content)
