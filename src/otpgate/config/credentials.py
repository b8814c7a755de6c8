"""The durable credential store and the second factors kept in it."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from otpgate.config.pairs import split_pairs
from otpgate.config.section import Section
from otpgate.credentials.cipher import KEY_BYTES
from otpgate.credentials.engine import DatabaseUrlError, async_url


def parse_encryption_keys(text: str) -> dict[str, bytes]:
    """``id:base64,...`` to ``{id: key}`` (the first encrypts); ValueError naming the
    entry by its position, never its content."""
    keys: dict[str, bytes] = {}
    for index, key_id, encoded in split_pairs(
        text, ":", "id:<base64 of 32 bytes>", "the id of an earlier entry"
    ):
        if not key_id.replace("-", "").replace("_", "").isalnum() or not key_id.isascii():
            raise ValueError(f"entry {index}: the id must be letters, digits, '_' or '-'")
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_")
        except (binascii.Error, ValueError):
            raise ValueError(f"entry {index}: the key is not base64") from None
        if len(key) != KEY_BYTES:
            raise ValueError(f"entry {index}: the key must be {KEY_BYTES} bytes")
        keys[key_id] = key
    return keys


def read_key_file(path: Path) -> bytes:
    """The one key FACTOR_ENCRYPTION_KEY_FILE holds (32 bytes in base64); OSError when
    it cannot be read, ValueError when it is not such a key."""
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (UnicodeDecodeError, binascii.Error):
        raise ValueError("does not hold a key in base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"does not hold a {KEY_BYTES}-byte key")
    return key


class CredentialSettings(Section):
    """Where second factors (authenticator apps, recovery codes) are kept: a SQL database
    that must be backed up, unlike the hot store. SQLite beside the hot store's file by
    default; PostgreSQL when several hosts share it. `otpgate migrate` creates and
    upgrades its schema."""

    SECTION_TITLE: ClassVar[str] = "Credentials and second factors"

    database_url: str = Field(
        "sqlite:///.otpgate/credentials.sqlite3",
        description="The credential database: sqlite:///path/to/file.sqlite3 (one host; a"
        " relative path is from the working directory, its directory created when"
        " missing), or postgresql://user:password@host:5432/db for several hosts. A password"
        " is redacted wherever it is shown.",
    )
    database_migrate_on_start: bool = Field(
        False,
        description="Apply the schema migrations when `otpgate serve` starts. Off: serve"
        " refuses to start on a schema that is behind, naming `otpgate migrate`.",
    )
    database_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        description="Seconds the database may take to connect and to answer (on SQLite, to"
        " wait for the write lock).",
    )
    factor_encryption_keys: SecretStr | None = Field(
        None,
        description="Keys the factor secrets are encrypted with (AES-256-GCM), as"
        " comma-separated id:key entries, each key 32 random bytes in base64 (e.g."
        ' `python3 -c "import base64,os; print(base64.b64encode(os.urandom(32)).decode())"`).'
        " The first encrypts, all decrypt: to rotate, put a new key first and keep the old"
        " one after it. Required in production.",
    )
    factor_encryption_key_file: Path = Field(
        Path(".otpgate/factor-encryption-key"),
        description="Without FACTOR_ENCRYPTION_KEYS: one key (32 bytes in base64, key id"
        " dev) kept in this file. In development it is generated once; production reads it"
        " when this is set (as `otpgate init` writes it) and never creates it. To rotate,"
        " move to FACTOR_ENCRYPTION_KEYS with a new key first and this one as dev:<key>.",
    )
    totp_issuer: str = Field(
        "otpgate",
        min_length=1,
        max_length=64,
        description="The issuer in authenticator apps' otpauth:// URIs: the name the app"
        " shows above the code.",
    )
    totp_skew_steps: int = Field(
        1,
        ge=0,
        le=10,
        description="Time steps (of 30 seconds) either side of now whose code is accepted,"
        " for clocks that drift.",
    )
    recovery_code_count: int = Field(
        10, ge=1, le=50, description="Recovery codes in a set (each usable once)."
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            async_url(value)
        except DatabaseUrlError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("factor_encryption_keys")
    @classmethod
    def _check_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not parse_encryption_keys(value.get_secret_value()):
            raise ValueError("at least one id:key entry is needed")
        return value
