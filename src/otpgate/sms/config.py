"""Validation for the SMS delivery settings, as annotated types.

``otpgate.settings`` declares the fields with these types; each error becomes
"VARIABLE: reason" at start-up.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from otpgate.domain import message

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def _blank_is_unset(value: object) -> object:
    """``VAR=`` in a .env file means "not set", not "set to nothing"."""
    return None if isinstance(value, str) and not value.strip() else value


def _sender_id(value: str) -> str:
    if not (value.isascii() and value.isalnum() and len(value) <= 11 and not value.isdigit()):
        raise ValueError("must be 1 to 11 letters and digits, with at least one letter")
    return value


def _e164(value: str) -> str:
    if not _E164.fullmatch(value):
        raise ValueError("must be a number in E.164 form, such as +18005550100")
    return value


def _webotp_domain(value: str) -> str:
    return message.check_webotp_domain(value.lower())


# Optional values: blank means unset, a given value must pass the inner validator.
_Blank = BeforeValidator(_blank_is_unset)
SenderId = Annotated[Annotated[str, AfterValidator(_sender_id)] | None, _Blank]
WebOtpDomain = Annotated[Annotated[str, AfterValidator(_webotp_domain)] | None, _Blank]
AndroidAppHash = Annotated[
    Annotated[str, AfterValidator(message.check_android_app_hash)] | None, _Blank
]
E164Number = Annotated[Annotated[str, AfterValidator(_e164)] | None, _Blank]
MaxPrice = Annotated[Annotated[Decimal, Field(gt=0, le=1000)] | None, _Blank]

MessageTemplateText = Annotated[str, AfterValidator(message.check_template)]
AppName = Annotated[str, AfterValidator(message.check_app_name)]
