"""Phone number parsing: strict E.164 in, canonical E.164 and country out."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import phonenumbers
from phonenumbers.phonemetadata import PhoneMetadata

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

    @property
    def key(self) -> str:
        """What the store keys the phone by: its E.164 form."""
        return self.e164

    def masked(self) -> str:
        """Log-safe form: ``+1555***4567``."""
        return mask(self.e164)


def mask(e164: str) -> str:
    """``+1555***4567``: enough to recognise a number, not to dial it."""
    return f"{e164[:5]}***{e164[-4:]}" if len(e164) > 9 else "+***"


def parse_phone(raw: str, check: PhoneCheck = "valid") -> Phone:
    """Parse with libphonenumber; ``valid`` also rejects unallocated ranges.

    Cached (bounded): a verify usually follows a request for the same number, and a
    libphonenumber validation costs ~30 µs. Rejections raise and are never cached.
    Most numbers take ``_known_valid``'s shortcut; anything it does not accept gets
    the full parse, so the shortcut can only ever agree with it.
    """
    return Phone(*_parsed(raw, check))


# The cache holds plain tuples of strings and ints, which the garbage collector stops
# tracking; cached Phone objects (16k of them under traffic to many numbers) made
# every full collection walk them all: ~20 ms pauses, enough to lift the p99.
@lru_cache(maxsize=16_384)
def _parsed(raw: str, check: PhoneCheck) -> tuple[str, str | None, int]:
    if not _E164.fullmatch(raw):
        raise InvalidPhoneNumber()
    if check == "valid":
        known = _known_valid(raw)
        if known is not None:
            return known
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber() from exc
    # is_valid_number looks the region up itself; doing it once here saves ~20%.
    region = phonenumbers.region_code_for_number(number)
    ok = (
        region is not None and phonenumbers.is_valid_number_for_region(number, region)
        if check == "valid"
        else phonenumbers.is_possible_number(number)
    )
    if not ok:
        raise InvalidPhoneNumber()
    if region in (None, "ZZ", "001"):
        region = None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, region, int(number.country_code or 0)


def _known_valid(e164: str) -> tuple[str, str | None, int] | None:
    """A number that is valid exactly as written, without libphonenumber's general parse.

    The wire format is already strict E.164, so the country code is one of the 1-3
    digit prefixes libphonenumber knows (they are prefix-free) and the rest is the
    national number. The general parse, about half of a validation's cost, also
    normalises national prefixes and leading zeros; a national number starting with
    0, or one that is not valid as it stands, returns None and goes through it.
    """
    for length in (1, 2, 3):
        country_code = int(e164[1 : 1 + length])
        if country_code in _COUNTRY_CODES:
            national = e164[1 + length :]
            break
    else:
        return None
    if not national or national[0] == "0":
        return None
    number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
    region = phonenumbers.region_code_for_number(number)
    if region is None or not phonenumbers.is_valid_number_for_region(number, region):
        return None
    return e164, None if region in ("ZZ", "001") else region, country_code


_COUNTRY_CODES = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


@dataclass(frozen=True, slots=True)
class Dialling:
    """How a country's numbers are dialled: what a form needs to build E.164 from a
    national number (``+`` calling code, then the number without its trunk prefix)."""

    region: str  # ISO 3166-1 alpha-2
    calling_code: int
    national_prefix: str | None  # the trunk prefix dialled at home ("0", "1"), if any


def dialling(regions: Iterable[str] | None = None) -> list[Dialling]:
    """Each of ``regions`` (every region libphonenumber knows when None), in that order."""
    chosen = sorted(phonenumbers.SUPPORTED_REGIONS) if regions is None else regions
    found = []
    for region in chosen:
        metadata = PhoneMetadata.metadata_for_region(region)
        if metadata is None or metadata.country_code is None:
            continue
        found.append(Dialling(region, metadata.country_code, metadata.national_prefix))
    return found


@lru_cache(maxsize=16_384)
def is_landline(e164: str) -> bool:
    """Whether libphonenumber types this (parsed, canonical) number a fixed line, which
    no text message reaches; a type it cannot tell apart from a mobile's
    (``FIXED_LINE_OR_MOBILE``, ``UNKNOWN``, VoIP...) is not one.

    Apart from ``parse_phone``'s cache and asked only when a text is about to go out: a
    verify, the hot path, never pays for it. Taken from the canonical E.164 form, so
    both of ``parse_phone``'s paths (the shortcut and the full parse) give one answer;
    the general parse here keeps a national number's leading zero (Italy's landlines).
    Cached (bounded) as a plain bool, which the garbage collector does not track.
    """
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.FIXED_LINE
