"""The SMS text: a template with ``{code}``, ``{app}``, ``{minutes}`` and, when shown,
``{purpose}`` (what the code approves), in the language asked for (``catalog.py``),
plus optional machine-readable lines that let a browser or an Android app pick the
code up, in every language.

Layout, each extra line only when its setting is given::

    123456 is your Acme verification code. It expires in 5 minutes. Don't share it.
    FA+9qCX9VSu                      <- Android SMS Retriever app hash
                                     <- blank line
    @login.acme.example #123456      <- WebOTP origin-bound line, always last

The WebOTP format requires the origin-bound line to be the last one; the SMS
Retriever only requires the hash to appear in the message, so it goes just before.

Also here: how many SMS segments a text needs (GSM-7 or UCS-2), so start-up can
warn when a language's template cannot fit in one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from otpgate.domain.catalog import (
    FALLBACK_LANGUAGE,
    Channel,
    Rendered,
    Template,
    TemplateCatalog,
    TemplateKey,
    check_placeholders,
)

DEFAULT_TEMPLATE = (
    "{code} is your {app} verification code. It expires in {minutes} minutes. Don't share it."
)
DEFAULT_APP_NAME = "otpgate"
ENGLISH_SMS: TemplateKey = ("sms", FALLBACK_LANGUAGE, "text")
# The longest purpose (``purpose.PURPOSE_PATTERN``), for measuring a rendered text.
LONGEST_PURPOSE = 64

# GSM 03.38 default alphabet (one septet each) and its extension table (two septets:
# escape + character). Anything else forces the whole message into UCS-2.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")

_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*"
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z"
)
_APP_HASH = re.compile(r"[A-Za-z0-9+/]{11}\Z")


def check_template(template: str) -> str:
    """Refuse a template that cannot render: unknown fields, bad braces, no ``{code}``."""
    return check_placeholders(template)


def check_app_name(name: str) -> str:
    if not name.strip() or len(name) > 40 or any(not ch.isprintable() for ch in name):
        raise ValueError("must be 1 to 40 printable characters")
    return name


def check_webotp_domain(domain: str) -> str:
    """A bare host name, as the WebOTP origin-bound line wants it (no scheme, port, path)."""
    if not _HOSTNAME.match(domain):
        raise ValueError("must be a bare host name such as login.example.com (no scheme or path)")
    return domain


def check_android_app_hash(value: str) -> str:
    if not _APP_HASH.match(value):
        raise ValueError("must be the 11-character SMS Retriever hash of the Android app")
    return value


def minutes_for(ttl_seconds: int) -> int:
    """Whole minutes a code lives, rounded down so the text never promises too much."""
    return max(1, ttl_seconds // 60)


@dataclass(frozen=True, slots=True)
class SmsLayout:
    """How a text travels: its encoding, its length in that encoding's units, segments."""

    encoding: Literal["GSM-7", "UCS-2"]
    units: int
    segments: int
    single_segment_limit: int
    non_gsm: str  # the characters that forced UCS-2, in order of first appearance


def measure(text: str) -> SmsLayout:
    non_gsm = "".join(dict.fromkeys(ch for ch in text if ch not in GSM7_BASIC | GSM7_EXTENDED))
    if not non_gsm:
        units = sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    segments = 1 if units <= single else math.ceil(units / multi)
    return SmsLayout(encoding, units, segments, single, non_gsm)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """Every message a code goes out in, and the SMS's extra lines.

    ``template`` is the English SMS (SMS_MESSAGE_TEMPLATE): given, it replaces the
    catalog's; None keeps the catalog's, or ``DEFAULT_TEMPLATE`` when it has none.
    ``catalog`` has every other channel and language.
    """

    template: str | None = None
    app: str = DEFAULT_APP_NAME
    webotp_domain: str | None = None
    android_app_hash: str | None = None
    # Off unless asked for: a purpose may be an internal id the user should not see.
    show_purpose: bool = False
    catalog: TemplateCatalog = field(default_factory=TemplateCatalog)

    def __post_init__(self) -> None:
        if self.template is not None or ENGLISH_SMS not in self.catalog.templates:
            english = Template(self.template or DEFAULT_TEMPLATE, "SMS_MESSAGE_TEMPLATE")
            object.__setattr__(self, "catalog", self.catalog.with_template(ENGLISH_SMS, english))

    def compose(
        self,
        channel: Channel,
        code: str,
        ttl_seconds: int,
        purpose: str | None = None,
        locale: str | None = None,
        *,
        app: str | None = None,
    ) -> Rendered:
        """The channel's template for ``locale`` (or its fallback), filled in; ``app``,
        when given, stands in for the configured name (as Verify v2's services do)."""
        shown = purpose if self.show_purpose and purpose else ""
        return self.catalog.render(
            channel,
            locale,
            code=code,
            app=app or self.app,
            minutes=minutes_for(ttl_seconds),
            purpose=shown,
        )

    def render(
        self,
        code: str,
        ttl_seconds: int,
        purpose: str | None = None,
        locale: str | None = None,
        *,
        app: str | None = None,
        android_app_hash: str | None = None,
    ) -> str:
        """The SMS text, with the Android and WebOTP lines in every language; ``app`` and
        ``android_app_hash``, when given, stand in for the configured ones."""
        text = self.compose("sms", code, ttl_seconds, purpose, locale, app=app).text
        app_hash = android_app_hash or self.android_app_hash
        if app_hash:
            text += f"\n{app_hash}"
        if self.webotp_domain:
            text += f"\n\n@{self.webotp_domain} #{code}"
        return text

    def sms_layouts(self, code_length: int, ttl_seconds: int) -> dict[str, SmsLayout]:
        """How each language's SMS travels at its longest: any code of the configured
        length (digits measure alike in GSM-7 and UCS-2), the longest purpose if shown."""
        longest = "x" * LONGEST_PURPOSE if self.show_purpose else None
        sample = "0" * code_length
        return {
            language: measure(self.render(sample, ttl_seconds, longest, language))
            for language in self.catalog.languages("sms")
        }

    def fit_warnings(self, code_length: int, ttl_seconds: int) -> list[str]:
        """Why a language's SMS would not fit in one segment; empty when every one does."""
        warnings = []
        for language, layout in self.sms_layouts(code_length, ttl_seconds).items():
            if layout.segments == 1:
                continue
            origin = self.catalog.template("sms", language).origin
            name = origin if origin == "SMS_MESSAGE_TEMPLATE" else f"The {language!r} SMS template"
            if layout.encoding == "UCS-2":
                named = layout.non_gsm[:10] + ("..." if len(layout.non_gsm) > 10 else "")
                reason = (
                    f"it contains characters outside the GSM-7 alphabet ({named!r}), "
                    f"so it is sent as UCS-2 where one segment holds {layout.single_segment_limit}"
                )
            else:
                reason = f"one GSM-7 segment holds {layout.single_segment_limit} characters"
            where = "" if origin == "SMS_MESSAGE_TEMPLATE" else f" ({origin})"
            warnings.append(
                f"{name}{where} renders to {layout.units} {layout.encoding} characters "
                f"and will be sent as {layout.segments} SMS segments (each billed): {reason}. "
                "Shorten the template or SMS_APP_NAME."
            )
        return warnings
