"""Validation for the delivery settings (SMS, email over SMTP, the other channels), as
annotated types.

``otpgate.config.settings`` declares the fields with these types and runs the checks
that need several variables; each error becomes
"VARIABLE: reason" at start-up. Nothing here echoes a value back: a test
number's code or a webhook secret must not end up in a log.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_settings import NoDecode

from otpgate.config.pairs import split_pairs
from otpgate.domain import message
from otpgate.domain.catalog import CHANNELS
from otpgate.domain.errors import InvalidPhoneNumber
from otpgate.domain.phone import parse_phone

# The channels a webhook receiver may deliver besides SMS (SMS_PROVIDER picks SMS's).
WEBHOOK_CHANNELS = ("whatsapp", "call")
# The channels that reach a phone, and so may fall back to one another.
PHONE_CHANNELS = ("sms", "whatsapp", "call")
_HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z"
)

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


def _smtp_host(value: str) -> str:
    value = value.strip()
    if _HOST_NAME.match(value):
        return value
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        raise ValueError("must be a host name or an IP address (no scheme or port)") from None


def _email_from(value: str) -> str:
    """An address, or ``Display Name <address>``; the address ASCII (no SMTPUTF8)."""
    value = value.strip()
    display, address = parseaddr(value)
    shape = "must be an email address, or Name <address>"
    if not address or "<" in display or any(not ch.isprintable() for ch in value):
        raise ValueError(shape)
    try:
        validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{shape}: {exc}") from None
    if not address.isascii():
        # MAIL FROM would need SMTPUTF8, which the sender does not ask for.
        raise ValueError(f"{shape}, in ASCII (an international domain in its xn-- form)")
    return value


def _split_channels(value: object) -> object:
    if not isinstance(value, str):
        return value
    return [c.strip() for c in value.split(",") if c.strip()]


def _check_webhook_channels(value: list[str]) -> list[str]:
    for channel in value:
        if channel not in WEBHOOK_CHANNELS:
            raise ValueError(
                f"{channel!r} is not a channel a webhook receiver delivers"
                f" ({', '.join(WEBHOOK_CHANNELS)}; SMS_PROVIDER picks SMS's provider)"
            )
    if len(set(value)) != len(value):
        raise ValueError("names a channel twice")
    return value


def _split_fallback(value: object) -> object:
    """``whatsapp>sms,call>whatsapp>sms`` into {first channel: the rest, in order}."""
    if not isinstance(value, str):
        return value
    chains: dict[str, list[str]] = {}
    for index, entry in enumerate((e.strip() for e in value.split(",") if e.strip()), start=1):
        names = [name.strip() for name in entry.split(">")]
        if len(names) < 2 or not all(names):
            raise ValueError(f"entry {index} is not channel>channel[>channel...]")
        if names[0] in chains:
            raise ValueError(f"entry {index} repeats {names[0]}, which another entry starts")
        chains[names[0]] = names[1:]
    return chains


def _check_fallback(value: dict[str, list[str]]) -> dict[str, list[str]]:
    for first, rest in value.items():
        chain = [first, *rest]
        shown = ">".join(chain)
        for channel in chain:
            if channel not in CHANNELS:
                raise ValueError(f"{shown}: {channel!r} is not a channel ({', '.join(CHANNELS)})")
            if channel not in PHONE_CHANNELS:
                raise ValueError(
                    f"{shown}: {channel} cannot fall back or be fallen back to; only the"
                    f" phone channels ({', '.join(PHONE_CHANNELS)}) reach the same recipient"
                )
        if len(set(chain)) != len(chain):
            raise ValueError(f"{shown}: names a channel twice")
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
SmtpHost = Annotated[Annotated[str, AfterValidator(_smtp_host)] | None, _Blank]
EmailFrom = Annotated[Annotated[str, AfterValidator(_email_from)] | None, _Blank]
OptionalText = Annotated[str | None, _Blank]
OptionalSecret = Annotated[SecretStr | None, _Blank]
WebhookChannels = Annotated[
    list[str], NoDecode, BeforeValidator(_split_channels), AfterValidator(_check_webhook_channels)
]
ChannelFallback = Annotated[
    dict[str, list[str]],
    NoDecode,
    BeforeValidator(_split_fallback),
    AfterValidator(_check_fallback),
]
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
    return is_loopback(parts.hostname or "")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
