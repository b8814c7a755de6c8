"""What the factor use cases refuse with, each with its machine code.

A wrong code, a replayed one and a code for a factor that cannot take one yet are one
answer, ``invalid_code`` (``otpgate.domain.errors.InvalidCode``): telling a replay apart
would confirm to whoever replays a code seen over a shoulder that it was right.
"""

from __future__ import annotations

from otpgate.domain.errors import OtpError


class InvalidIdentity(OtpError):
    code = "invalid_identity"
    message = "identity must be 1 to 128 letters, digits or _ . @ : + -."


class FactorNotFound(OtpError):
    code = "factor_not_found"
    message = "No such factor for this identity."


class FactorAlreadyVerified(OtpError):
    """A first code for a factor that has had one: challenge it instead."""

    code = "factor_already_verified"
    message = "This factor is already verified."


class FactorLocked(OtpError):
    """Too many wrong codes for this identity: the escalating lockout of message codes
    (``limits.Lockout``), with its settings."""

    code = "too_many_attempts"
    message = "Too many failed attempts for this identity. Try again later."

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after=retry_after)


class CredentialsUnavailable(OtpError):
    """The credential database does not answer (or its schema is not this version's)."""

    code = "credentials_unavailable"
    message = "The credential store is temporarily unavailable. Please try again later."
