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
