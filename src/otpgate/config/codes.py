"""The codes: their shape, lifetime, attempts, keyed hash and fixed test numbers."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from otpgate.config import delivery
from otpgate.config.section import Section


class CodeSettings(Section):
    """The one-time codes: how long they are, how long they live, how many tries each
    gets, the key their hashes are made with, and numbers with fixed codes for testing."""

    SECTION_TITLE: ClassVar[str] = "Codes"

    otp_length: int = Field(6, ge=4, le=10, description="Digits per code (4 to 10).")
    otp_ttl_seconds: int = Field(
        300, ge=30, le=86_400, description="Seconds a code can be verified after it is sent."
    )
    otp_max_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="Verify attempts per code; past them even the right code is refused"
        " (429 too_many_attempts).",
    )
    verification_retention_seconds: int = Field(
        86_400,
        ge=0,
        le=90 * 86_400,
        description="Seconds a verification's status stays answerable after its code"
        " expires (0 to 90 days); lower it when store memory counts more than history.",
    )
    otp_hash_secret: SecretStr | None = Field(
        None,
        description="The HMAC key codes are hashed with, 32+ random characters (e.g."
        ' `python3 -c "import secrets; print(secrets.token_urlsafe(48))"`). Required in'
        " production (or OTP_HASH_SECRET_FILE); every instance sharing a store needs the"
        " same one.",
    )
    otp_hash_secret_file: Path = Field(
        Path(".otpgate/hash-secret"),
        description="Without OTP_HASH_SECRET, the file that holds the key (32+ characters;"
        " otpgate init writes one). Production reads it only when set, and never creates"
        " it; development generates a key once and keeps it here.",
    )
    phone_number_check: Literal["valid", "possible"] = Field(
        "valid",
        description="valid accepts numbers in allocated ranges only (libphonenumber's"
        " metadata); possible accepts any number of a plausible length.",
    )
    test_phone_numbers: delivery.TestPhoneNumbers = Field(
        default_factory=dict,
        description="Comma-separated number=code pairs (E.164 number, OTP_LENGTH digits)"
        " that get that fixed code and never an SMS, for store review and QA. Refused in"
        " production unless ALLOW_TEST_NUMBERS_IN_PRODUCTION is true.",
    )
    allow_test_numbers_in_production: bool = Field(
        False,
        description="Accept TEST_PHONE_NUMBERS when APP_ENV=production (anyone who learns"
        " one can verify as it).",
    )
