"""Phone number parsing: strict E.164 in, canonical E.164 and country out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import phonenumbers

from otpgate.domain.errors import InvalidPhoneNumber

PhoneCheck = Literal["valid", "possible"]

# Only the E.164 shape is accepted on the wire: no spaces, dashes or national forms,
# so one subscriber has exactly one key in the store and in every limit.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


@dataclass(frozen=True, slots=True)
class Phone:
    e164: str
    region: str | None  # ISO 3166-1 alpha-2, None when the number maps to no region
    country_code: int

    def masked(self) -> str:
        """Log-safe form: ``+1555***4567``."""
        return f"{self.e164[:5]}***{self.e164[-4:]}" if len(self.e164) > 9 else "+***"


@lru_cache(maxsize=16_384)
def parse_phone(raw: str, check: PhoneCheck = "valid") -> Phone:
    """Parse with libphonenumber; ``valid`` also rejects unallocated ranges.

    Cached (bounded): a verify usually follows a request for the same number, and a
    libphonenumber validation costs ~30 µs. Rejections raise and are never cached.
    """
    if not _E164.fullmatch(raw):
        raise InvalidPhoneNumber()
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber() from exc
    ok = (
        phonenumbers.is_valid_number(number)
        if check == "valid"
        else phonenumbers.is_possible_number(number)
    )
    if not ok:
        raise InvalidPhoneNumber()
    region = phonenumbers.region_code_for_number(number)
    if region in (None, "ZZ", "001"):
        region = None
    return Phone(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        region=region,
        country_code=int(number.country_code or 0),
    )
