"""API keys: their configuration form, and the check of a presented key.

``API_KEYS`` lists ``name:key`` or ``name:sha256:<hex>`` entries (the hex SHA-256 of
the key's UTF-8 bytes, so that a leaked configuration leaks no key). Only names and
digests are kept: a plain key is hashed as it is read, so neither the settings object
nor anything printed from it holds a key. A presented key is hashed once and its
digest compared with every configured one by ``hmac.compare_digest``, all of them
every time, so how long a check takes says nothing about which key came close.

No error message here echoes any part of an entry: a malformed entry may be a key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_settings import NoDecode

from otpgate.config.pairs import split_pairs
from otpgate.config.section import SECRET, Section

AuthMode = Literal["off", "optional", "required"]

MIN_KEY_LENGTH = 32
HASHED_PREFIX = "sha256:"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# What a header carries as it is: visible ASCII, no space (and no comma, the separator).
_KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def key_digest(secret: str) -> str:
    """A key of 32+ visible ASCII characters, or ``sha256:<hex>``, as the key's hex
    SHA-256; ValueError (never echoing the value) otherwise."""
    if secret.startswith(HASHED_PREFIX):
        digest = secret.removeprefix(HASHED_PREFIX)
        if not _HEX_DIGEST.fullmatch(digest):
            raise ValueError("after sha256: must come the key's SHA-256 as 64 lowercase hex digits")
        return digest
    if len(secret) < MIN_KEY_LENGTH:
        raise ValueError(f"the key must be at least {MIN_KEY_LENGTH} characters")
    if not _KEY.fullmatch(secret):
        raise ValueError("the key must be visible ASCII characters (no space or comma)")
    return hashlib.sha256(secret.encode()).hexdigest()


def digest_matches(presented: bytes, digest: bytes) -> bool:
    """Whether ``presented`` is the key whose SHA-256 is ``digest``, in constant time."""
    return hmac.compare_digest(hashlib.sha256(presented).digest(), digest)


def _split_entries(value: object) -> object:
    """``ci:<key>,web:sha256:<hex>`` into ``{name: hex digest}``; plain keys hashed here."""
    if not isinstance(value, str):
        return value
    digests: dict[str, str] = {}
    pairs = split_pairs(value, ":", "name:key or name:sha256:<hex>", "the name of an earlier entry")
    for index, name, secret in pairs:
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"entry {index}: the name must be letters, digits, '_', '.' or '-' only"
            )
        try:
            digest = key_digest(secret)
        except ValueError as exc:
            raise ValueError(f"entry {index}: {exc}") from None
        if digest in digests.values():
            raise ValueError(f"entry {index} repeats the key of an earlier entry")
        digests[name] = digest
    return digests


def _check_digests(value: dict[str, str]) -> dict[str, str]:
    """Also what a mapping given directly (not the variable's text) must look like."""
    for index, (name, digest) in enumerate(value.items(), start=1):
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"entry {index}: the name must be letters, digits, '_', '.' or '-' only"
            )
        if not _HEX_DIGEST.fullmatch(digest):
            raise ValueError(f"entry {index}: not a SHA-256 as 64 lowercase hex digits")
    return value


def _blank_is_unset(value: object) -> object:
    """``API_AUTH=`` in a .env file means "not set"."""
    return None if isinstance(value, str) and not value.strip() else value


# The settings fields: the mode, unset until chosen; key names to each key's hex SHA-256.
ApiAuthSetting = Annotated[AuthMode | None, BeforeValidator(_blank_is_unset)]

ApiKeyDigests = Annotated[
    dict[str, str],
    NoDecode,
    BeforeValidator(_split_entries),
    AfterValidator(_check_digests),
]


class ApiKeySettings(Section):
    """Who may call the API (/api/v1/) and the operators' routes (/admin/v1/ and the
    /admin dashboard). Keys are sent as `Authorization: Bearer <key>`; only each key's
    name and SHA-256 are kept, never printed."""

    SECTION_TITLE: ClassVar[str] = "API keys"

    api_keys: ApiKeyDigests = Field(
        default_factory=dict,
        json_schema_extra=SECRET,
        description="Comma-separated name:key entries (key: 32+ visible ASCII characters)"
        " or name:sha256:<hex> (the key's SHA-256, 64 lowercase hex digits, so that the"
        ' configuration holds no key: printf %s "$KEY" | sha256sum). Names unique, of'
        " A-Z a-z 0-9 _ . -; a caller with a key may name its end user in X-End-User-IP.",
    )
    api_auth: ApiAuthSetting = Field(
        None,
        description="off, optional or required: whether API routes need a key (required"
        " needs API_KEYS); a key that is sent must be valid in every mode. Unset: off in"
        " development; production must set it.",
    )
    admin_api_keys: ApiKeyDigests = Field(
        default_factory=dict,
        json_schema_extra=SECRET,
        description="Comma-separated name:key or name:sha256:<hex> entries, as API_KEYS: the"
        " operators' keys for /admin/v1/ and the dashboard, which are off (404) while it is"
        " unset. None of them may also be an API key or VERIFY_V2_AUTH_TOKEN.",
    )

    @property
    def effective_api_auth(self) -> AuthMode:
        return self.api_auth or "off"


@dataclass(frozen=True, slots=True)
class ApiAuth:
    """What the HTTP layer needs: the mode, and each key's digest with its name."""

    mode: AuthMode = "off"
    keys: tuple[tuple[bytes, str], ...] = field(default=(), repr=False)

    @classmethod
    def from_digests(cls, mode: AuthMode, digests: Mapping[str, str]) -> ApiAuth:
        return cls(mode, tuple((bytes.fromhex(hexed), name) for name, hexed in digests.items()))

    @property
    def required(self) -> bool:
        return self.mode == "required"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.keys)

    def name_of(self, key: bytes) -> str | None:
        """The name of the configured key ``key`` is, or None.

        Every digest is compared, with no early exit, so the time taken is the same
        whichever key (if any) matched.
        """
        presented = hashlib.sha256(key).digest()
        found: str | None = None
        for digest, name in self.keys:
            if hmac.compare_digest(presented, digest):
                found = name
        return found
