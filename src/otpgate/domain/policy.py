"""The numbers that shape a send or a verify, gathered from settings once."""

from __future__ import annotations

from dataclasses import dataclass

from otpgate.domain.phone import PhoneCheck


@dataclass(frozen=True, slots=True)
class OtpPolicy:
    length: int = 6
    ttl_seconds: int = 300
    max_attempts: int = 5
    resend_cooldown_seconds: int = 60
    phone_sends_per_window: int = 5
    phone_send_window_seconds: int = 600
    phone_check: PhoneCheck = "valid"
    message_template: str = "Your verification code is: {code}"

    def render(self, code: str) -> str:
        return self.message_template.format(code=code)


# What a client is told when a send limit refuses it; the key is the machine code.
LIMIT_MESSAGES: dict[str, str] = {
    "resend_cooldown": "A code was sent to this number recently. Wait before asking again.",
    "phone_send_limit": "Too many codes were sent to this number. Try again later.",
}
