"""Validation for the SMS delivery settings, as annotated types.

``otpgate.settings`` declares the fields with these types; each error becomes
"VARIABLE: reason" at start-up.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from otpgate.domain import message


def _blank_is_unset(value: object) -> object:
    """``VAR=`` in a .env file means "not set", not "set to nothing"."""
    return None if isinstance(value, str) and not value.strip() else value


def _webotp_domain(value: str) -> str:
    return message.check_webotp_domain(value.lower())


# Optional values: blank means unset, a given value must pass the inner validator.
_Blank = BeforeValidator(_blank_is_unset)
WebOtpDomain = Annotated[Annotated[str, AfterValidator(_webotp_domain)] | None, _Blank]
AndroidAppHash = Annotated[
    Annotated[str, AfterValidator(message.check_android_app_hash)] | None, _Blank
]

MessageTemplateText = Annotated[str, AfterValidator(message.check_template)]
AppName = Annotated[str, AfterValidator(message.check_app_name)]
