"""The factor routes' bodies and answers (``http/factors.py``), one pydantic model each,
as ``schemas.py`` holds the code routes'."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from otpgate.domain.factors.values import FACTOR_ID_PATTERN, IDENTITY_PATTERN
from otpgate.http.schemas import _Body

_JWT_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
CODE_PATTERN = r"^[0-9]{6,8}$"


class EnrolFactorBody(_Body):
    type: Literal["totp"] = Field("totp", description="The kind of factor: an authenticator app.")
    name: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description='Your label for it, shown in lists ("Work phone").',
        examples=["Work phone"],
    )


class FactorCodeBody(_Body):
    code: str = Field(
        pattern=CODE_PATTERN,
        description="The code the authenticator app shows now.",
        examples=["492039"],
    )


class ChallengeBody(_Body):
    """A code of a verified factor (``factorId`` and ``code``), or a ``recoveryCode``."""

    factorId: str | None = Field(None, pattern=FACTOR_ID_PATTERN)
    code: str | None = Field(None, pattern=CODE_PATTERN, examples=["492039"])
    recoveryCode: str | None = Field(
        None,
        min_length=8,
        max_length=16,
        description="One of the identity's recovery codes, `xxxx-xxxx` (case, spaces and"
        " dashes do not matter).",
        examples=["7k4m-q2xh"],
    )


class FactorResponse(BaseModel):
    id: str = Field(pattern=FACTOR_ID_PATTERN, examples=["YF0123456789abcdef0123456789abcdef"])
    identity: str = Field(pattern=IDENTITY_PATTERN, examples=["user-42"])
    type: Literal["totp"]
    status: Literal["unverified", "verified"]
    name: str | None = None
    digits: int = Field(examples=[6])
    period: int = Field(examples=[30])
    algorithm: Literal["SHA1", "SHA256", "SHA512"]
    createdAt: str = Field(examples=["2026-11-30T12:00:00.000Z"])
    verifiedAt: str | None = Field(None, examples=["2026-11-30T12:00:30.000Z"])


class EnrolmentResponse(FactorResponse):
    secret: str = Field(
        pattern=r"^[A-Z2-7]+$",
        description="The secret in base32, for typing into the app. Shown this once.",
    )
    uri: str = Field(
        pattern=r"^otpauth://totp/",
        description="The otpauth:// URI an authenticator app reads (what the QR code holds)."
        " Holds the secret: shown this once.",
    )
    qrSvg: str = Field(description="The URI as a QR code, an SVG image. Shown this once.")


class FactorListResponse(BaseModel):
    factors: list[FactorResponse]


class ChallengeResponse(BaseModel):
    success: bool = Field(examples=[True])
    token: str = Field(
        pattern=_JWT_PATTERN,
        description="The same signed token as a verified code's (check it against"
        ' /.well-known/jwks.json), with `sub` the identity and `amr` ["otp"] for an'
        ' authenticator app\'s code or ["rec"] for a recovery code.',
    )
    method: Literal["totp", "recovery"]
    factorId: str | None = None
    recoveryCodesLeft: int | None = Field(
        None, description="After a recovery code: how many of the set are left."
    )


class RecoveryCodesResponse(BaseModel):
    codes: list[str] = Field(
        description="The new set, shown this once; every earlier code is void.",
        examples=[["7k4m-q2xh", "c9dw-hn3t"]],
    )
    remaining: int = Field(examples=[10])


class RecoveryCountResponse(BaseModel):
    remaining: int = Field(description="Unused recovery codes.", examples=[7])
