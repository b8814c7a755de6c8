"""Request and response bodies: one pydantic model each.

The same models validate incoming JSON and generate the OpenAPI document, so
the docs cannot drift from what the service accepts.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from otpgate.domain.catalog import CHANNELS
from otpgate.domain.locale import LOCALE_PATTERN, MAX_LOCALE_LENGTH, is_locale
from otpgate.domain.purpose import PURPOSE_PATTERN

E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"
VERIFICATION_ID_PATTERN = r"^VE[0-9a-f]{32}$"

PhoneField = Annotated[
    str,
    Field(
        pattern=E164_PATTERN,
        max_length=16,
        description="Destination in E.164 form.",
        examples=["+12125550123"],
    ),
]


PurposeField = Annotated[
    str | None,
    Field(
        pattern=PURPOSE_PATTERN,
        description="What the code approves (login, transfer:8f2c...): a code verifies only"
        " with the purpose it was requested for; no purpose is a purpose of its own.",
        examples=["login"],
    ),
]


def _locale(value: str) -> str:
    # The error's type is the answer's machine code (body.py): a malformed tag has a code
    # of its own, so a client can tell it from the rest of a bad body.
    if not is_locale(value):
        raise PydanticCustomError("invalid_locale", "not a BCP 47 language tag")
    return value


LocaleField = Annotated[
    Annotated[
        str,
        AfterValidator(_locale),
        # Checked by ``_locale``, which answers its own machine code; the document says it.
        Field(json_schema_extra={"pattern": LOCALE_PATTERN, "maxLength": MAX_LOCALE_LENGTH}),
    ]
    | None,
    Field(
        description="The language of the SMS, a BCP 47 tag (es, pt-BR, fr-CA). A language"
        " otpgate has no text for falls back to a broader one (pt-BR to pt), then to"
        " English; only a malformed tag is refused (400 `invalid_locale`). Without it, the"
        " SMS is English.",
        examples=["pt-BR"],
    ),
]

EmailField = Annotated[
    str | None,
    Field(
        description="For the email channel, in place of phoneNumber: the address to send the"
        " code to. Checked for its syntax only (no DNS look-up); kept and sent to in its"
        " canonical form (lowercase, the domain in ASCII). Not an address: 400"
        " `invalid_email`.",
        examples=["jane@example.com"],
        json_schema_extra={"format": "email"},
    ),
]


def _channel(value: str) -> str:
    # The error's type is the answer's machine code, as for a locale (body.py).
    if value not in CHANNELS:
        raise PydanticCustomError("invalid_channel", "not a channel")
    return value


ChannelField = Annotated[
    Annotated[
        str,
        AfterValidator(_channel),
        # Checked by ``_channel``, which answers its own machine code; the document says it.
        Field(json_schema_extra={"enum": list(CHANNELS)}),
    ]
    | None,
    Field(
        description="How the code goes out: sms (the default), whatsapp or call (a voice"
        " reads it out) to phoneNumber, or email to email (which implies it). A channel the"
        " service has no provider for: 400 `channel_not_enabled`; any other value: 400"
        " `invalid_channel`.",
        examples=["email"],
    ),
]

VerificationIdField = Annotated[
    str,
    Field(
        pattern=VERIFICATION_ID_PATTERN,
        description="The verification a request-otp opened.",
        examples=["VE0123456789abcdef0123456789abcdef"],
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RequestOtpBody(_Body):
    """``phoneNumber``, or for the email channel ``email``: one of them, never both."""

    phoneNumber: PhoneField | None = None
    email: EmailField = None
    channel: ChannelField = None
    purpose: PurposeField = None
    locale: LocaleField = None


class VerifyOtpBody(_Body):
    """``phoneNumber`` (or ``email``) or ``verificationId``, or both, which must agree."""

    phoneNumber: PhoneField | None = None
    email: EmailField = None
    verificationId: VerificationIdField | None = None
    otp: str
    purpose: PurposeField = None


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
    verificationId: str = Field(
        description="The verification this send opened: look it up, cancel it, or verify by it.",
        examples=["VE0123456789abcdef0123456789abcdef"],
    )
    channel: Literal["sms", "whatsapp", "call", "email"] | None = Field(
        None,
        description="The channel that delivered the code: the one asked for, or the one a"
        " fallback (CHANNEL_FALLBACK) took when that one's provider was down. Present when"
        " the request named a channel or an email, or a fallback delivered it.",
    )


class VerifyOtpResponse(BaseModel):
    success: bool = Field(examples=[True])
    message: str = Field(examples=["OTP verified successfully."])
    token: str = Field(
        pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
        description="Proof of this verify for your backend: a JWT signed with ES256 by a key"
        " in /.well-known/jwks.json (header `kid`). Claims: `iss` (TOKEN_ISSUER), `aud`"
        " (TOKEN_AUDIENCE), `sub` (the phone, E.164, or the email address), `iat`, `exp`"
        " (TOKEN_TTL_SECONDS later), `jti` (the verification id), `amr` (how the code went"
        ' out: ["sms"], ["tel"] for a call, ["whatsapp"], ["email"]) and `purpose` when one'
        " was given. Check it on your backend; never trust a client's word that it verified.",
    )
    verificationId: str = Field(description="The verification this code approved.")


class VerificationResponse(BaseModel):
    id: str = Field(examples=["VE0123456789abcdef0123456789abcdef"])
    phoneNumber: str | None = Field(
        None,
        description="E.164; masked (+1212***0123) unless the caller sent a valid API key."
        " Absent for an email verification, which has `email` instead.",
        examples=["+1212***0123"],
    )
    email: str | None = Field(
        None,
        description="An email verification's address; masked (j***@example.com) unless the"
        " caller sent a valid API key.",
        examples=["j***@example.com"],
    )
    status: Literal[
        "pending", "approved", "canceled", "expired", "max_attempts_reached", "failed"
    ] = Field(
        description="canceled also when a newer code for the phone replaced this one;"
        " failed when the SMS could not be sent."
    )
    channel: str = Field(
        description="The channel that delivered the code (sms, whatsapp, call, email).",
        examples=["sms"],
    )
    purpose: str | None = Field(examples=["login"])
    createdAt: str = Field(description="ISO 8601, UTC.", examples=["2026-11-30T12:00:00.000Z"])
    updatedAt: str = Field(description="ISO 8601, UTC: the last status change.")
    expiresAt: str = Field(description="ISO 8601, UTC: when the code stops working.")


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
    verificationId: str | None = Field(
        None,
        description="On a send that failed: the verification it opened (status failed).",
    )


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
