"""Codes, hashing and phone parsing: the pure pieces, without any I/O."""

from __future__ import annotations

import pytest

from otpgate.domain.codes import CodeHasher, generate_code
from otpgate.domain.errors import InvalidPhoneNumber
from otpgate.domain.phone import parse_phone


def test_codes_have_the_length_and_use_all_digits() -> None:
    codes = [generate_code(6) for _ in range(2000)]
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert {c[0] for c in codes} == set("0123456789")  # leading zeros are part of the space
    assert len(set(codes)) > 1900


def test_hash_is_keyed_and_bound_to_phone() -> None:
    a, b = CodeHasher(b"k" * 32), CodeHasher(b"j" * 32)
    assert a.digest("+12125550123", "123456") != b.digest("+12125550123", "123456")
    assert a.digest("+12125550123", "123456") != a.digest("+12125550124", "123456")
    stored = a.digest("+12125550123", "123456")
    assert a.matches(stored, "+12125550123", "123456")
    assert not a.matches(stored, "+12125550123", "123457")
    assert b"123456" not in stored
    assert "k" * 32 not in repr(a)


def test_hasher_refuses_a_short_key() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        CodeHasher(b"short")


@pytest.mark.parametrize(
    ("raw", "e164", "region"),
    [
        ("+12125550123", "+12125550123", "US"),
        ("+442071838750", "+442071838750", "GB"),
        ("+4915112345678", "+4915112345678", "DE"),
    ],
)
def test_valid_numbers(raw: str, e164: str, region: str) -> None:
    phone = parse_phone(raw)
    assert (phone.e164, phone.region) == (e164, region)


@pytest.mark.parametrize(
    "raw",
    [
        "12125550123",
        "+0212555012",
        "+1212555012x",
        "+1 212 555 0123",
        "+15551234567",
        "+1212555012345678",
        "",
        "+",
    ],
)
def test_invalid_numbers(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        parse_phone(raw)


def test_possible_check_accepts_unallocated_ranges() -> None:
    assert parse_phone("+15551234567", "possible").e164 == "+15551234567"


def test_masking_hides_the_middle() -> None:
    assert parse_phone("+12125550123").masked() == "+1212***0123"
