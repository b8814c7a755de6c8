"""Request and response bodies: one pydantic model each.

The same models validate incoming JSON and generate the OpenAPI document, so
the docs cannot drift from what the service accepts.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"

PhoneField = Annotated[
    str,
    Field(
        pattern=E164_PATTERN,
        max_length=16,
        description="Destination in E.164 form.",
        examples=["+12125550123"],
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RequestOtpBody(_Body):
    phoneNumber: PhoneField


class VerifyOtpBody(_Body):
    phoneNumber: PhoneField
    otp: str


@cache
def verify_body_model(length: int) -> type[VerifyOtpBody]:
    """The verify model with the configured code length baked into its pattern."""
    otp_field: Any = Annotated[
        str,
        Field(
            pattern=rf"^[0-9]{{{length}}}$",
            description=f"The {length}-digit code from the SMS.",
            examples=["0" * (length - 1) + "7"],
        ),
    ]
    return create_model("VerifyOtpBody", __base__=VerifyOtpBody, otp=(otp_field, ...))


class RequestOtpResponse(BaseModel):
    message: str = Field(examples=["OTP requested successfully. Check your phone."])
    messageId: str = Field(description="The SMS provider's message id.")
    expiresIn: int = Field(description="Seconds until the code expires.", examples=[300])


class VerifyOtpResponse(BaseModel):
    success: bool = Field(examples=[True])
    message: str = Field(examples=["OTP verified successfully."])
    token: str = Field(
        pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
        description="Proof of this verify for your backend: a JWT signed with ES256 by a key"
        " in /.well-known/jwks.json (header `kid`). Claims: `iss` (TOKEN_ISSUER), `aud`"
        " (TOKEN_AUDIENCE), `sub` (the phone, E.164), `iat`, `exp` (TOKEN_TTL_SECONDS"
        ' later), `jti` (unique per token), `amr` (["sms"]) and `purpose` when one was'
        " given. Check it on your backend; never trust a client's word that it verified.",
    )


class Jwk(BaseModel):
    """One public signing key (RFC 7517, RFC 7518 section 6.2)."""

    kty: Literal["EC"]
    crv: Literal["P-256"]
    x: str = Field(description="The public point's x coordinate, base64url.")
    y: str = Field(description="The public point's y coordinate, base64url.")
    kid: str = Field(description="The key's RFC 7638 thumbprint; a token's header names it.")
    alg: Literal["ES256"]
    use: Literal["sig"]


class JwksResponse(BaseModel):
    keys: list[Jwk] = Field(
        min_length=1,
        description="Every key that may have signed a token still valid; the first signs now.",
    )


class ErrorBody(BaseModel):
    statusCode: int = Field(examples=[400])
    error: str = Field(examples=["Bad Request"])
    message: str = Field(examples=["Invalid or expired OTP."])
    code: str = Field(description="Stable machine-readable reason.", examples=["invalid_code"])


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])


class ReadyResponse(BaseModel):
    status: Literal["ready"] = Field(examples=["ready"])


class NotReadyResponse(BaseModel):
    status: Literal["not ready"] = Field(examples=["not ready"])
    reasons: list[str] = Field(
        description="Why this instance should not get traffic; never holds a secret.",
        examples=[["store (redis) is not answering"]],
    )
