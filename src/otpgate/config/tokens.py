"""The signed token a successful verify answers."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from otpgate.config.section import Section


class TokenSettings(Section):
    """A successful verify answers a JWT (ES256) that the caller's backend checks
    against /.well-known/jwks.json; these set its claims, lifetime and signing keys."""

    SECTION_TITLE: ClassVar[str] = "Tokens"

    token_issuer: str = Field("otpgate", min_length=1, description="The tokens' iss claim.")
    token_audience: str = Field(
        "otpgate", min_length=1, description="The tokens' aud claim: the backend they are for."
    )
    token_ttl_seconds: int = Field(
        300, ge=60, le=3600, description="Seconds a token is valid (60 to 3600)."
    )
    token_signing_keys_file: Path | None = Field(
        None,
        description="A file of EC P-256 private keys in PEM (PKCS#8 or SEC1), concatenated:"
        " the first signs, all are published. Required in production (make one with"
        " `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8"
        " -nocrypt`).",
    )
    token_dev_key_file: Path = Field(
        Path(".otpgate/token-signing-key.pem"),
        description="Development only, without TOKEN_SIGNING_KEYS_FILE: a signing key"
        " generated once and kept in this file.",
    )
