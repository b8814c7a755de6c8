"""The SMS text: a template with ``{code}``, ``{app}``, ``{minutes}`` and, when shown,
``{purpose}`` (what the code approves), plus optional
machine-readable lines that let a browser or an Android app pick the code up.

Layout, each extra line only when its setting is given::

    123456 is your Acme verification code. It expires in 5 minutes. Don't share it.
    FA+9qCX9VSu                      <- Android SMS Retriever app hash
                                     <- blank line
    @login.acme.example #123456      <- WebOTP origin-bound line, always last

The WebOTP format requires the origin-bound line to be the last one; the SMS
Retriever only requires the hash to appear in the message, so it goes just before.

Also here: how many SMS segments a text needs (GSM-7 or UCS-2), so start-up can
warn when the configured template cannot fit in one.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Literal

DEFAULT_TEMPLATE = (
    "{code} is your {app} verification code. It expires in {minutes} minutes. Don't share it."
)
DEFAULT_APP_NAME = "otpgate"
TEMPLATE_FIELDS = frozenset({"code", "app", "minutes", "purpose"})
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
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{exc}; write a literal brace as {{{{ or }}}}") from None
    seen = set()
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(
                f"unknown placeholder {{{name}}}; use only {{code}}, {{app}}, {{minutes}}"
                " and {purpose}"
            )
        seen.add(name)
    if "code" not in seen:
        raise ValueError("must contain {code}")
    return template


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
    template: str = DEFAULT_TEMPLATE
    app: str = DEFAULT_APP_NAME
    webotp_domain: str | None = None
    android_app_hash: str | None = None
    # Off unless asked for: a purpose may be an internal id the user should not see.
    show_purpose: bool = False

    def render(
        self,
        code: str,
        ttl_seconds: int,
        purpose: str | None = None,
        *,
        app: str | None = None,
        android_app_hash: str | None = None,
    ) -> str:
        """The text; ``app`` and ``android_app_hash``, when given, stand in for the
        configured ones (a caller naming its own app, as Verify v2's services do)."""
        shown = purpose if self.show_purpose and purpose else ""
        text = self.template.format(
            code=code, app=app or self.app, minutes=minutes_for(ttl_seconds), purpose=shown
        )
        app_hash = android_app_hash or self.android_app_hash
        if app_hash:
            text += f"\n{app_hash}"
        if self.webotp_domain:
            text += f"\n\n@{self.webotp_domain} #{code}"
        return text

    def fit_warnings(self, code_length: int, ttl_seconds: int) -> list[str]:
        """Why a rendered message would not fit in one SMS segment; empty when it does.

        Digits are one septet in GSM-7 and one unit in UCS-2, so any code of the
        configured length measures the same as the sample used here.
        """
        longest = "x" * LONGEST_PURPOSE if self.show_purpose else None
        layout = measure(self.render("0" * code_length, ttl_seconds, longest))
        if layout.segments == 1:
            return []
        if layout.encoding == "UCS-2":
            reason = (
                f"it contains characters outside the GSM-7 alphabet ({layout.non_gsm!r}), "
                f"so it is sent as UCS-2 where one segment holds {layout.single_segment_limit}"
            )
        else:
            reason = f"one GSM-7 segment holds {layout.single_segment_limit} characters"
        return [
            f"SMS_MESSAGE_TEMPLATE renders to {layout.units} {layout.encoding} characters "
            f"and will be sent as {layout.segments} SMS segments (each billed): {reason}. "
            "Shorten the template or SMS_APP_NAME."
        ]
