"""Which limits apply to a send and to a verify: abuse defence as plain data.

Every SMS costs money and every code guards an account, so a send passes, in
one atomic store step: a surge block on its prefix and country, the resend
cooldown, the per-phone, per-country and global budgets, and the per-IP cap on
distinct phones. The verify side is the per-code attempt limit (in OtpPolicy)
plus an escalating lockout per phone across codes.

The window arithmetic lives here too, so every store implements the same rule
by calling it (or, in Lua, by mirroring it line for line).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from otpgate.domain.errors import CountryNotAllowed, LimitExceeded, OtpError, RateLimited
from otpgate.domain.phone import Phone

HOUR = 3600

# What a client is told when a limit refuses it; the key is the machine code.
LIMIT_MESSAGES: dict[str, str] = {
    "resend_cooldown": "A code was sent to this number recently. Wait before asking again.",
    "phone_send_limit": "Too many codes were sent to this number. Try again later.",
    "ip_phone_limit": "Too many different phone numbers from this client. Try again later.",
    "country_budget": "Too many codes were sent to this country. Try again later.",
    "global_budget": "The service has reached its SMS budget. Try again later.",
    "prefix_blocked": "Sending to this number range is paused after unusual traffic.",
    "country_blocked": "Sending to this country is paused after unusual traffic.",
    "phone_locked": "Too many failed attempts for this number. Try again later.",
}


@dataclass(frozen=True, slots=True)
class Quota:
    """A sliding-window counter checked and charged together with a send.

    ``kind`` is the machine code reported when it refuses; ``key`` scopes it
    (a phone, a country, ``*`` for global).
    """

    kind: str
    key: str
    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class DistinctQuota:
    """At most ``limit`` distinct members per fixed window, e.g. phones per IP."""

    kind: str
    key: str
    member: str
    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class SurgeGuard:
    """Blocks ``key`` for ``block_seconds`` when its sends surge past a baseline.

    The rule: a send is refused, and the key blocked, when the sends in the
    current fixed window would exceed ``max(min_sends, factor * previous window)``.
    The previous window is the baseline, so steady growth passes and a burst
    against a quiet prefix trips it.
    """

    kind: str
    key: str
    min_sends: int
    factor: float
    window_seconds: int
    block_seconds: int

    def allowed(self, previous: int) -> float:
        return max(self.min_sends, self.factor * previous)


@dataclass(frozen=True, slots=True)
class Lockout:
    """Escalating lock on a phone after consecutive failed verifies, across codes.

    From ``threshold`` failures on, each further attempt waits
    ``min(base * 2**(n - threshold), max)`` seconds after the last failure; at
    ``hard_cap`` failures the phone stays locked until the failure record lapses,
    ``memory_seconds`` after the last failure. A success clears the record.
    """

    kind: str = "phone_locked"
    threshold: int = 10
    base_seconds: int = 60
    max_seconds: int = 86_400
    hard_cap: int = 100
    memory_seconds: int = 30 * 86_400

    def wait_seconds(self, failures: int) -> float:
        if failures >= self.hard_cap:
            return float(self.memory_seconds)
        if failures < self.threshold:
            return 0.0
        return float(min(self.base_seconds * 2 ** (failures - self.threshold), self.max_seconds))


def window_index(now: float, window_seconds: int) -> int:
    return int(now // window_seconds)


def sliding_count(previous: int, current: int, now: float, window_seconds: int) -> float:
    """Sliding-window-counter estimate: the previous window weighted by its overlap."""
    elapsed = (now % window_seconds) / window_seconds
    return previous * (1.0 - elapsed) + current


def seconds_until_allowed(
    previous: int, current: int, limit: int, now: float, window_seconds: int
) -> int:
    """When one more send fits under ``limit`` again, in whole seconds (at least 1)."""
    into = now % window_seconds
    room = limit - 1 - current  # sends that fit on top of the current window's own count
    if room >= 0:
        if previous == 0:
            return 1
        # previous * (1 - t/w) <= room  =>  t >= w * (1 - room / previous)
        return max(1, math.ceil(window_seconds * (1.0 - room / previous) - into))
    # The current window alone is over: wait until it becomes a light enough baseline.
    into_next = window_seconds * (1.0 - (limit - 1) / current)
    return max(1, math.ceil(window_seconds - into + into_next))


def seconds_until_window_ends(now: float, window_seconds: int) -> int:
    return max(1, math.ceil(window_seconds - now % window_seconds))


def refusal(kind: str, retry_after: int) -> OtpError:
    if kind == RateLimited.code:
        return RateLimited(retry_after)
    return LimitExceeded(kind, LIMIT_MESSAGES[kind], retry_after=retry_after)


@dataclass(frozen=True, slots=True)
class PumpingGuard:
    """Surge rule per number prefix and per country (see SurgeGuard for the rule)."""

    enabled: bool = True
    prefix_digits: int = 7
    prefix_min_sends: int = 20
    country_min_sends: int = 200
    factor: float = 5.0
    window_seconds: int = HOUR
    block_seconds: int = 6 * HOUR


@dataclass(frozen=True, slots=True)
class AbusePolicy:
    resend_cooldown_seconds: int = 60
    phone_sends: int = 5
    phone_window_seconds: int = 600
    ip_max_phones: int = 10
    ip_phones_window_seconds: int = HOUR
    country_sms_per_hour: int = 1000
    country_sms_overrides: Mapping[str, int] = field(default_factory=dict)
    global_sms_per_hour: int = 10_000
    allowed_countries: frozenset[str] | None = None  # None: every country
    pumping: PumpingGuard = field(default_factory=PumpingGuard)
    lockout: Lockout = field(default_factory=Lockout)

    def check_country(self, phone: Phone) -> None:
        if self.allowed_countries is None:
            return
        if phone.region is None or phone.region not in self.allowed_countries:
            raise CountryNotAllowed()

    def send_quotas(self, phone: Phone) -> tuple[Quota, ...]:
        country = country_scope(phone)
        return (
            Quota("phone_send_limit", phone.e164, self.phone_sends, self.phone_window_seconds),
            Quota(
                "country_budget",
                f"country:{country}",
                self.country_sms_overrides.get(country, self.country_sms_per_hour),
                HOUR,
            ),
            Quota("global_budget", "global", self.global_sms_per_hour, HOUR),
        )

    def send_distinct(self, phone: Phone, client_ip: str) -> tuple[DistinctQuota, ...]:
        return (
            DistinctQuota(
                "ip_phone_limit",
                f"ip:{client_ip}",
                phone.e164,
                self.ip_max_phones,
                self.ip_phones_window_seconds,
            ),
        )

    def send_surges(self, phone: Phone) -> tuple[SurgeGuard, ...]:
        p = self.pumping
        if not p.enabled:
            return ()
        prefix = phone.e164[1 : 1 + p.prefix_digits]
        return (
            SurgeGuard(
                "prefix_blocked",
                f"prefix:{prefix}",
                p.prefix_min_sends,
                p.factor,
                p.window_seconds,
                p.block_seconds,
            ),
            SurgeGuard(
                "country_blocked",
                f"country:{country_scope(phone)}",
                p.country_min_sends,
                p.factor,
                p.window_seconds,
                p.block_seconds,
            ),
        )


def country_scope(phone: Phone) -> str:
    """ISO region, or the calling code for numbers outside any region (``+800``)."""
    return phone.region or f"+{phone.country_code}"
