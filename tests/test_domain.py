"""Codes, hashing, phone parsing and window arithmetic: the pure pieces, without any I/O."""

from __future__ import annotations

import pytest

from otpgate.domain.codes import CodeHasher, generate_code
from otpgate.domain.errors import InvalidPhoneNumber
from otpgate.domain.limits import (
    AbusePolicy,
    Quota,
    buckets_counted,
    buckets_wait,
    log_wait,
    retry_seconds,
    to_ms,
)
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


def test_window_arithmetic_on_whole_milliseconds() -> None:
    # A log of 3 per 60 s holding sends at 0, 1 and 2 s: at 30 s the one at 0 s must
    # leave first, at 60 s; with 2 of 3 there is room at once.
    assert log_wait([0, 1_000, 2_000], 3, 60_000, 30_000) == 30_000
    assert log_wait([1_000, 2_000], 3, 60_000, 30_000) == 0
    # Ten sub-windows of 6 s: at 61 s the ones from 0 s (index 0) to 61 s (index 10)
    # overlap the window (1 s, 61 s], eleven of them.
    assert buckets_counted(61_000, 60_000, 10) == range(0, 11)
    # Two sends in sub-window 0 and one in 5 against a limit of 3: one must leave,
    # sub-window 0, counted until 6 s + 60 s.
    counts = [2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert buckets_wait(counts, 0, 3, 60_000, 10, 61_000) == 5_000
    # Against a limit of 1 sub-window 5 must go too: until 36 s + 60 s.
    assert buckets_wait(counts, 0, 1, 60_000, 10, 61_000) == 35_000
    assert buckets_wait(counts, 0, 4, 60_000, 10, 61_000) == 0
    assert (retry_seconds(1), retry_seconds(1_000), retry_seconds(1_001)) == (1, 1, 2)
    assert to_ms(1_800_000_000.123) == 1_800_000_000_123


def test_a_quota_refuses_settings_it_cannot_count() -> None:
    with pytest.raises(ValueError, match="limit"):
        Quota("global_budget", "global", 0, 3600)
    with pytest.raises(ValueError, match="buckets"):
        Quota("global_budget", "global", 10, 1, buckets=1001)


def test_the_policy_logs_a_phone_exactly_and_counts_budgets_in_sub_windows() -> None:
    phone, country, everyone = AbusePolicy().send_quotas(parse_phone("+12125550123"))
    assert (phone.kind, phone.buckets) == ("phone_send_limit", 0)
    assert (country.kind, country.buckets) == ("country_budget", 10)
    assert (everyone.kind, everyone.buckets) == ("global_budget", 10)
