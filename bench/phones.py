"""The phone numbers every scenario draws from, the same for both services.

otpgate rejects numbers libphonenumber does not consider valid (the classic
+1555... test numbers included), so load is drawn from real US area codes with
any exchange 200-999: 10 x 800 x 10,000 = 80 million numbers. That keeps
repeats rare, so no number reaches a per-number attempt limit by chance.
The wrk scripts get the area codes through BENCH_AREA_CODES.
"""

from __future__ import annotations

import random

AREA_CODES = ("212", "201", "202", "415", "312", "617", "305", "713", "404", "206")
EXCHANGES = range(200, 1000)
LINES = 10_000
SPACE = len(AREA_CODES) * len(EXCHANGES) * LINES


def phone_at(index: int) -> str:
    """The index-th number of the space: distinct indexes give distinct numbers."""
    index %= SPACE
    index, line = divmod(index, LINES)
    area, exchange = divmod(index, len(EXCHANGES))
    return f"+1{AREA_CODES[area]}{EXCHANGES[exchange]}{line:04d}"


def random_phone(rng: random.Random) -> str:
    return phone_at(rng.randrange(SPACE))


def lua_area_codes() -> str:
    return ",".join(AREA_CODES)


def check_all_valid() -> None:
    """Fail before any load if a libphonenumber update made part of the space invalid.

    Validity of a US number depends on its area code and exchange, so checking
    the first and last line of each pair covers the space (16,000 parses, ~0.2 s).
    """
    import phonenumbers

    for area in AREA_CODES:
        for exchange in EXCHANGES:
            for line in ("0000", "9999"):
                number = f"+1{area}{exchange}{line}"
                if not phonenumbers.is_valid_number(phonenumbers.parse(number)):
                    raise SystemExit(
                        f"bench: {number} is not valid for libphonenumber; "
                        "drop its area code or exchange from bench/phones.py"
                    )
