"""The validation shortcut never disagrees with libphonenumber's full parse."""

from __future__ import annotations

import gc
import random

import phonenumbers
import pytest

from otpgate.domain.errors import InvalidPhoneNumber
from otpgate.domain.phone import Phone, _known_valid, _parsed, parse_phone


def full_parse(e164: str) -> Phone | None:
    """The reference: the general parse, then the same validity rule."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(number)
    if region is None or not phonenumbers.is_valid_number_for_region(number, region):
        return None
    return Phone(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        region=None if region in ("ZZ", "001") else region,
        country_code=int(number.country_code or 0),
    )


def example_numbers() -> list[str]:
    numbers = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in vars(phonenumbers.PhoneNumberType).values():
            if isinstance(kind, int):
                example = phonenumbers.example_number_for_type(region, kind)
                if example is not None:
                    numbers.add(phonenumbers.format_number(example, 0))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            numbers.add(phonenumbers.format_number(example, 0))
    return sorted(numbers)


def variants(e164: str, rng: random.Random) -> list[str]:
    """Near misses: national prefixes spelled out, digits added, dropped or changed."""
    number = phonenumbers.parse(e164, None)
    cc = str(number.country_code)
    national = e164[1 + len(cc) :]
    out = [
        f"+{cc}0{national}",
        f"+{cc}1{national}",
        f"+{cc}{national}0",
        f"+{cc}{national[:-1]}",
        f"+{cc}{national[1:]}",
    ]
    for _ in range(3):
        digits = list(national)
        digits[rng.randrange(len(digits))] = str(rng.randrange(10))
        out.append(f"+{cc}{''.join(digits)}")
    return [v for v in out if 3 <= len(v) <= 16]


EXAMPLES = example_numbers()


def test_examples_cover_the_world() -> None:
    assert len(EXAMPLES) > 1000


def test_shortcut_agrees_with_the_full_parse() -> None:
    rng = random.Random(20261125)
    checked = shortcut_taken = 0
    for example in EXAMPLES:
        for candidate in [example, *variants(example, rng)]:
            fast = _known_valid(candidate)
            checked += 1
            if fast is not None:
                shortcut_taken += 1
                assert Phone(*fast) == full_parse(candidate), candidate
    # It must actually be the common path for valid numbers, or it saves nothing.
    assert shortcut_taken > len(EXAMPLES) * 0.9, (shortcut_taken, checked)


@pytest.mark.parametrize("raw", ["+12125550123", "+447400123456", "+33612345678"])
def test_parse_phone_results_match_the_reference(raw: str) -> None:
    _parsed.cache_clear()
    assert parse_phone(raw) == full_parse(raw)


@pytest.mark.parametrize("raw", ["+112125550123", "+4402071234567", "+15551234567"])
def test_numbers_the_shortcut_declines_still_get_the_full_parse(raw: str) -> None:
    _parsed.cache_clear()
    assert _known_valid(raw) is None
    reference = full_parse(raw)
    if reference is None:
        with pytest.raises(InvalidPhoneNumber):
            parse_phone(raw)
    else:
        assert parse_phone(raw) == reference


def test_the_cache_holds_nothing_the_collector_walks() -> None:
    """16k cached numbers must not lengthen every full collection (the p99 under load)."""
    _parsed.cache_clear()
    phone = parse_phone("+12125550123")
    gc.collect()
    assert not gc.is_tracked(_parsed("+12125550123", "valid"))
    assert parse_phone("+12125550123") == phone
