"""The Verify v2 compatible API's configuration: its account, its token, its services.

``VERIFY_V2_AUTH_TOKEN`` is read as ``API_KEYS`` entries are: a token of 32+ visible
ASCII characters is hashed as it is read, or ``sha256:<64 hex>`` gives its digest, so
neither the settings object nor anything printed from it holds the token. A presented
token is checked by ``api_keys.digest_matches`` (one SHA-256, one constant-time compare).

No error message here echoes any part of a value: a malformed one may be a token.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_settings import NoDecode

from otpgate.config.api_keys import key_digest
from otpgate.config.pairs import split_pairs
from otpgate.config.section import SECRET, Section

ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
SERVICE_SID = re.compile(r"VA[0-9a-f]{32}")
MAX_FRIENDLY_NAME = 30  # Twilio's own limit on a service's friendly name
_FRIENDLY_NAME = re.compile(r"[^\x00-\x1f\x7f,]+")  # printable, no comma (the separator)


def _blank_is_unset(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _check_account_sid(value: str | None) -> str | None:
    if value is not None and not ACCOUNT_SID.fullmatch(value.strip()):
        raise ValueError("must be AC followed by 32 lowercase hex digits")
    return value.strip() if value is not None else None


def _token_digest(value: object) -> object:
    """A token, or ``sha256:<hex>``, as the token's hex SHA-256."""
    if not isinstance(value, str):
        return value
    value = value.strip()
    if not value:
        return None
    try:
        return key_digest(value)
    except ValueError as exc:
        raise ValueError(str(exc).replace("key", "token")) from None


def _split_services(value: object) -> object:
    """``VA…:Friendly name,VA…:Other`` into ``{service sid: friendly name}``."""
    if not isinstance(value, str):
        return value
    pairs = split_pairs(
        value, ":", "VA<32 hex>:Friendly name", "the service sid of an earlier entry"
    )
    return {sid: name for _, sid, name in pairs}


def _check_services(value: dict[str, str]) -> dict[str, str]:
    for index, (sid, name) in enumerate(value.items(), start=1):
        if not SERVICE_SID.fullmatch(sid):
            raise ValueError(
                f"entry {index}: the sid must be VA followed by 32 lowercase hex digits"
            )
        problem = friendly_name_problem(name)
        if problem:
            raise ValueError(f"entry {index}: the friendly name {problem}")
    return value


def friendly_name_problem(name: str) -> str | None:
    """What is wrong with a service's friendly name, or None."""
    if len(name) > MAX_FRIENDLY_NAME or not _FRIENDLY_NAME.fullmatch(name):
        return f"must be 1 to {MAX_FRIENDLY_NAME} printable characters, without a comma"
    return None


AccountSid = Annotated[
    str | None, BeforeValidator(_blank_is_unset), AfterValidator(_check_account_sid)
]
AuthTokenDigest = Annotated[str | None, BeforeValidator(_token_digest)]
Services = Annotated[
    dict[str, str], NoDecode, BeforeValidator(_split_services), AfterValidator(_check_services)
]


class VerifyV2Settings(Section):
    """The Twilio Verify v2 compatible API (/v2/Services/...), for clients moving from
    Twilio: off (404) until all three variables are set, and refused with only some."""

    SECTION_TITLE: ClassVar[str] = "Verify v2 compatible API"

    verify_v2_account_sid: AccountSid = Field(
        None,
        description="AC and 32 lowercase hex digits: the account sid callers authenticate"
        " as (HTTP Basic, with VERIFY_V2_AUTH_TOKEN).",
    )
    verify_v2_auth_token: AuthTokenDigest = Field(
        None,
        json_schema_extra=SECRET,
        description="The account's auth token (32+ visible ASCII characters) or"
        " sha256:<hex> of it; only its SHA-256 is kept, never logged nor shown.",
    )
    verify_v2_services: Services = Field(
        default_factory=dict,
        description="Comma-separated VA<32 lowercase hex>:Friendly name entries (name 1 to"
        " 30 characters, no comma): the services served; the friendly name is {app} in"
        " that service's SMS.",
    )

    @property
    def verify_v2_enabled(self) -> bool:
        return self.verify_v2_account_sid is not None
