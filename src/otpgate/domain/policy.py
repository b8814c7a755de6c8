"""The shape of a code and its message, gathered from settings once."""

from __future__ import annotations

from dataclasses import dataclass, field

from otpgate.domain.fixed_codes import TestNumbers
from otpgate.domain.message import MessageTemplate
from otpgate.domain.phone import PhoneCheck


@dataclass(frozen=True, slots=True)
class OtpPolicy:
    length: int = 6
    ttl_seconds: int = 300
    max_attempts: int = 5
    phone_check: PhoneCheck = "valid"
    # Texts (SMS, WhatsApp) to numbers libphonenumber types a fixed line: refused unless
    # this is True (SMS_TO_LANDLINES, for providers that turn a text into a call).
    texts_to_landlines: bool = False
    message: MessageTemplate = field(default_factory=MessageTemplate)
    test_numbers: TestNumbers = field(default_factory=TestNumbers)
    # A verification's record stays answerable this long after its code's expiry.
    verification_retention_seconds: int = 86400

    def render(
        self,
        code: str,
        purpose: str | None = None,
        *,
        locale: str | None = None,
        app: str | None = None,
        android_app_hash: str | None = None,
    ) -> str:
        """The SMS for ``code``, in ``locale``'s language or its fallback."""
        return self.message.render(
            code, self.ttl_seconds, purpose, locale, app=app, android_app_hash=android_app_hash
        )
