"""Validation for the SMS delivery settings, as annotated types.

``otpgate.settings`` declares the fields with these types and runs the checks
that need several variables; each error becomes
"VARIABLE: reason" at start-up. Nothing here echoes a value back: a test
number's code or a webhook secret must not end up in a log.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_settings import NoDecode

from otpgate.domain import message
from otpgate.domain.errors import InvalidPhoneNumber
from otpgate.domain.phone import parse_phone
from otpgate.setting_pairs import split_pairs

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


def _webhook_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _split_test_numbers(value: object) -> object:
    """``+12125550100=123456,+12125550101=654321`` into a mapping."""
    if not isinstance(value, str):
        return value
    return {number: code for _, number, code in split_pairs(value, "=", "number=code", "a number")}


def _check_test_numbers(value: dict[str, SecretStr]) -> dict[str, SecretStr]:
    for index, (number, code) in enumerate(value.items(), start=1):
        try:
            canonical: str | None = parse_phone(number, "possible").e164
        except InvalidPhoneNumber:
            canonical = None
        if canonical != number:
            raise ValueError(f"entry {index}: the number is not in E.164 form (+12125550100)")
        if not code.get_secret_value().isdigit():
            raise ValueError(f"entry {index}: the code must be digits only")
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
WebhookUrl = Annotated[Annotated[str, AfterValidator(_webhook_url)] | None, _Blank]
WebhookSecret = Annotated[SecretStr | None, _Blank]
# Read by the wiring at start-up (templates/), which names the file that cannot be used.
TemplatesDir = Annotated[Path | None, _Blank]

MessageTemplateText = Annotated[str, AfterValidator(message.check_template)]
AppName = Annotated[str, AfterValidator(message.check_app_name)]
TestPhoneNumbers = Annotated[
    dict[str, SecretStr],
    NoDecode,
    BeforeValidator(_split_test_numbers),
    AfterValidator(_check_test_numbers),
]


def https_or_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
