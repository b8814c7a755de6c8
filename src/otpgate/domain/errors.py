"""Outcomes a caller can see, each with a stable machine code.

The HTTP layer maps ``code`` to a status; the domain never speaks HTTP.
Messages are written for the end user's client and never carry a code,
a hash or a secret.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from otpgate.domain.windows import WindowHit


class Masked(Protocol):
    """A recipient as the access line names it (``otpgate.domain.recipient``)."""

    def masked(self) -> str: ...


class OtpError(Exception):
    """Base for every refusal or failure the API reports to a client.

    ``window_hit`` is the client's request-window count when the request was
    counted, so the answer can carry the rate-limit headers; ``phone`` is the
    recipient the request was about (a phone or an email address), when it parsed,
    so the access line can name it.
    """

    code = "error"
    message = "The request could not be completed."

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        self.message = message or type(self).message
        self.retry_after = retry_after
        self.window_hit: WindowHit | None = None
        # The recipient the request was about, once it parsed (for the access line).
        self.phone: Masked | None = None
        # The verification a failed send opened, so its record can be looked up.
        self.verification_id: str | None = None
        super().__init__(self.message)


class RateLimited(OtpError):
    """The client's per-IP request window is full (the Node service's wording)."""

    code = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Rate limit exceeded, retry in {retry_after} seconds", retry_after=retry_after
        )


class InvalidPhoneNumber(OtpError):
    code = "invalid_phone_number"
    message = "phoneNumber is not a valid E.164 phone number."


class InvalidEmail(OtpError):
    code = "invalid_email"
    message = "email is not a valid email address."


class ChannelNotEnabled(OtpError):
    """The channel asked for has no provider configured on this service."""

    code = "channel_not_enabled"
    message = "This delivery channel is not enabled on this service."

    def __init__(self, channel: str) -> None:
        super().__init__(f"The {channel} channel is not enabled on this service.")


class InvalidCode(OtpError):
    """Wrong, expired, already used or never requested: deliberately one answer."""

    code = "invalid_code"
    message = "Invalid or expired OTP."

    # The verification whose code was compared, when there was one (a wrong code), so a
    # caller that shows verifications can show it; never put in the seed routes' answers.
    compared_verification_id: str | None = None


class NoPendingCode(InvalidCode):
    """No code to compare: none was requested, it expired, was used or canceled, or the
    verification named is not the phone's current one.

    The seed routes answer it exactly as a wrong code (same machine code, same message),
    so they say nothing about which; the Verify v2 routes tell them apart, as Twilio does.
    """


class VerificationNotFound(OtpError):
    """No such verification, or its retention is over."""

    code = "verification_not_found"
    message = "No such verification."


class TooManyAttempts(OtpError):
    code = "too_many_attempts"
    message = "Too many failed attempts for this code. Request a new code."


class LimitExceeded(OtpError):
    """A send or verify limit refused the request; ``code`` names the limit."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        self.code = code
        super().__init__(message, retry_after=retry_after)


class CountryNotAllowed(OtpError):
    code = "country_not_allowed"
    message = "Sending codes to this country is not enabled."


class LandlineNotSupported(OtpError):
    """A text (SMS or WhatsApp) asked for a number libphonenumber types a fixed line:
    refused before anything is charged or sent, as no text would reach it."""

    code = "landline_not_supported"
    message = "This is a landline number, which cannot receive text messages. Use a mobile number."
    by_voice = (
        "This is a landline number, which cannot receive text messages. Use a mobile"
        " number, or ask for the code by voice call (channel: call)."
    )

    def __init__(self, *, voice: bool = False) -> None:
        """``voice``: this service calls numbers, so the message offers it."""
        super().__init__(self.by_voice if voice else None)


class RangeDenied(OtpError):
    """An operator denied sends to this number range or country."""

    code = "range_denied"
    message = "Sending codes to this number range is not allowed."


class SentBeforeShutdown(asyncio.CancelledError):
    """A send cut off by the service's shutdown once its code was handed to the provider.

    Still a cancellation (whoever awaits the send stops as before), carrying what the
    answer should say: the code stands, stored and (most likely) on its way, and so does
    the recipient's resend cooldown, ``retry_after`` more seconds, so asking again sooner
    would only be refused with ``resend_cooldown``.
    """

    code = "shutting_down"
    message = "The service is restarting, but the code was sent. Wait before asking for another."

    def __init__(self, retry_after: int) -> None:
        super().__init__(self.message)
        self.retry_after = retry_after


class StoreUnavailable(OtpError):
    """The store did not answer. ``may_have_run`` is False only when the store knows the
    step never reached the backend (no connection to send it on, a transaction rolled
    back), so there is nothing of it to undo."""

    code = "store_unavailable"
    message = "The OTP service is temporarily unavailable. Please try again later."

    def __init__(self, message: str | None = None, *, may_have_run: bool = True) -> None:
        super().__init__(message)
        self.may_have_run = may_have_run


# What a provider's failure means, whatever the channel: the recipient is the problem
# (no retry, no fallback), the provider is busy or down (try later, or the next channel),
# or our side of it is broken (credentials, configuration). Each channel's senders raise
# these; the SMS ones below keep the machine codes SMS clients already switch on.


class DeliveryRejected(OtpError):
    """The provider refused the recipient itself: retrying will not help, nor will
    another channel to the same recipient."""

    code = "recipient_rejected"
    message = "The provider rejected this recipient."


class DeliveryUnavailable(OtpError):
    """The provider is throttling or unreachable: retrying later may help."""

    code = "provider_unavailable"
    message = "The delivery provider is temporarily unavailable. Please try again later."


class DeliveryFailed(OtpError):
    """The provider failed in a way the client cannot fix (credentials, config)."""

    code = "provider_error"
    message = "The code could not be sent."


class SmsRejected(DeliveryRejected):
    """The provider refused the destination itself: retrying will not help."""

    code = "sms_number_rejected"
    message = "The SMS provider rejected this phone number."


class SmsUnavailable(DeliveryUnavailable):
    """The provider is throttling or unreachable: retrying later may help."""

    code = "sms_provider_unavailable"
    message = "The SMS provider is temporarily unavailable. Please try again later."


class SmsFailed(DeliveryFailed):
    """The provider failed in a way the client cannot fix (credentials, config)."""

    code = "sms_provider_error"
    message = "The SMS could not be sent."


class SmsOptedOut(DeliveryRejected):
    """The subscriber opted out of SMS from this sender (replied STOP): no SMS was sent."""

    code = "sms_number_opted_out"
    message = (
        "This phone number has opted out of text messages from this service, so no code was sent."
    )
