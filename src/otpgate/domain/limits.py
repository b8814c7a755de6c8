"""Which limits apply to a send and to a verify: abuse defence as plain data.

Every SMS costs money and every code guards an account, so a send passes, in
one atomic store step: a surge block on its prefix and country, the resend
cooldown, the per-phone, per-country and global budgets, and the per-IP cap on
distinct phones. The verify side is the per-code attempt limit (in OtpPolicy)
plus an escalating lockout per phone across codes.

An email address gets the same cooldown, per-recipient send limit, distinct-recipient
cap per IP and lockout as a phone, each under a key of its own; instead of the
country budgets and the pumping and conversion guards (which read number ranges) it
has a budget per email domain. It never counts in the SMS budgets.

The window arithmetic lives here too, so every store implements the same rule
by calling it (or, in Lua, by mirroring it line for line).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from otpgate.domain.email import Email
from otpgate.domain.errors import (
    CountryNotAllowed,
    LimitExceeded,
    OtpError,
    RangeDenied,
    RateLimited,
)
from otpgate.domain.phone import Phone

HOUR = 3600
# Sub-windows per window of the country and global budgets: never over the budget in
# any span of the window, and a send refused at most a tenth of the window early.
BUDGET_BUCKETS = 10

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
    "email_send_limit": "Too many codes were sent to this address. Try again later.",
    "ip_email_limit": "Too many different email addresses from this client. Try again later.",
    "email_domain_budget": "Too many codes were sent to this email domain. Try again later.",
}
# The same limits, worded for an email address where the phone's wording says "number".
EMAIL_LIMIT_MESSAGES: dict[str, str] = {
    "resend_cooldown": "A code was sent to this address recently. Wait before asking again.",
    "phone_locked": "Too many failed attempts for this address. Try again later.",
}
# The refusal of a send to a range an operator denied: not a limit that lifts in time.
RANGE_DENIED = "range_denied"


@dataclass(frozen=True, slots=True)
class Quota:
    """At most ``limit`` sends in any span of ``window_seconds``, checked and charged
    together with a send.

    ``kind`` is the machine code reported when it refuses; ``key`` scopes it
    (a phone, a country, ``global``). ``buckets`` chooses how the window is counted:

    - ``0``: an exact sliding log, one entry per send (``log_wait``). For small
      limits (a phone's few sends), where every entry is cheap and exactness shows.
    - ``k > 0``: ``k`` sub-windows of ``window / k`` each (``buckets_counted``,
      ``buckets_wait``), a constant amount of state however large the limit. Never
      more than ``limit`` in any span of the window; a send may be refused up to one
      sub-window (``window / k``) before an exact log would allow it.
    """

    kind: str
    key: str
    limit: int
    window_seconds: int
    buckets: int = 0

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"{self.kind}: limit must be at least 1")
        if self.buckets < 0 or self.buckets > self.window_ms:
            raise ValueError(f"{self.kind}: buckets must be 0..{self.window_ms}")

    @property
    def window_ms(self) -> int:
        return self.window_seconds * 1000


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


# Conversion (verified / sent) per number range, counted in the send and verify steps:
# sends and approvals per range in buckets of STAT_BUCKET_SECONDS (kept an hour and a
# little more) and of an hour (kept a day). A verify credits the bucket of the send.
STAT_BUCKET_SECONDS = 300
CONVERSION_WINDOW_SECONDS = HOUR
STAT_BUCKETS_KEPT = CONVERSION_WINDOW_SECONDS // STAT_BUCKET_SECONDS + 2
DAY_BUCKETS_KEPT = 25


@dataclass(frozen=True, slots=True)
class ConversionGuard:
    """Blocks ``key`` for ``block_seconds`` when too few of its settled sends convert.

    A send is settled once its code can no longer be verified (``settle_seconds``
    after its bucket ended). Over the settled buckets of the last
    ``CONVERSION_WINDOW_SECONDS``: once they hold ``min_sends`` sends, a conversion
    (approvals / sends) under ``min_rate`` refuses the send and blocks the range, as a
    surge does (the same block, ``kind`` on ``key``). Pumped numbers never enter
    their codes; real users mostly do.
    """

    kind: str
    key: str
    min_sends: int
    min_rate: float
    settle_seconds: int
    block_seconds: int

    def too_low(self, sends: int, approvals: int) -> bool:
        return sends >= self.min_sends and approvals < self.min_rate * sends


def stat_bucket(now: float) -> int:
    return int(now // STAT_BUCKET_SECONDS)


def day_bucket(now: float) -> int:
    return int(now // HOUR)


def settled_buckets(now_ms: int, settle_ms: int) -> range:
    """The stat buckets a conversion guard weighs at ``now``: those of the last
    ``CONVERSION_WINDOW_SECONDS`` whose codes have all run out (ended ``settle`` ago)."""
    width = STAT_BUCKET_SECONDS * 1000
    current = now_ms // width
    oldest = current - CONVERSION_WINDOW_SECONDS // STAT_BUCKET_SECONDS
    # Bucket j is settled when (j + 1) * width + settle <= now.
    newest = (now_ms - settle_ms) // width - 1
    return range(oldest, max(oldest, newest + 1))


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
    """Which fixed, clock-aligned window ``now`` falls in (surge guards, distinct quotas)."""
    return int(now // window_seconds)


# -- sliding windows, in integer milliseconds ---------------------------------------------
# Every store calls these (lua/limits.lua mirrors them line for line), on the same
# integer milliseconds, so all of them decide and round alike.


def to_ms(now: float) -> int:
    """The caller's clock in whole milliseconds, as every store counts sliding windows.

    Rounded, not truncated: the float seconds of a whole-ms instant can fall a hair
    under it.
    """
    return round(now * 1000)


def retry_seconds(wait_ms: int) -> int:
    """A wait in ms as Retry-After: whole seconds, rounded up, at least 1."""
    return max(1, -(-wait_ms // 1000))


def log_wait(times: Sequence[int], limit: int, window_ms: int, now_ms: int) -> int:
    """An exact sliding log: ms until one more send fits, 0 when it fits now.

    ``times`` are the logged sends still in the window (``t > now - window``),
    oldest first. One more fits while fewer than ``limit`` are; otherwise it fits
    once the oldest that must leave, ``times[len - limit]``, has left, ``window``
    after it was sent.
    """
    if len(times) < limit:
        return 0
    return times[len(times) - limit] + window_ms - now_ms


def bucket_index(now_ms: int, window_ms: int, buckets: int) -> int:
    """The sub-window ``now`` falls in: sub-window ``j`` holds the sends in
    ``[j * width, (j + 1) * width)``, ``width = window // buckets``."""
    return now_ms // (window_ms // buckets)


def bucket_leaves(index: int, window_ms: int, buckets: int) -> int:
    """When sub-window ``index`` stops being counted (``buckets_counted``): a whole
    window after its end. A store keeps its count until then, and no longer."""
    return (index + 1) * (window_ms // buckets) + window_ms


def buckets_counted(now_ms: int, window_ms: int, buckets: int) -> range:
    """The sub-windows a send at ``now`` counts, oldest first: every one that overlaps
    ``(now - window, now]`` (``buckets + 1`` of them when the width divides the
    window), so the counted span is at most ``window + width`` long."""
    return range(
        bucket_index(now_ms - window_ms, window_ms, buckets),
        bucket_index(now_ms, window_ms, buckets) + 1,
    )


def buckets_wait(
    counts: Sequence[int], first: int, limit: int, window_ms: int, buckets: int, now_ms: int
) -> int:
    """Sub-windows: ms until one more send fits, 0 when it fits now.

    ``counts`` are the sends of the counted sub-windows (``buckets_counted``), oldest
    first, the oldest being sub-window ``first``. One more fits while their sum is
    under ``limit``; otherwise the oldest must leave the count until it is, and the
    last of them to go, ``j``, leaves when ``(j + 1) * width`` is a window behind.
    """
    excess = sum(counts) + 1 - limit  # sends that must leave the count first
    if excess <= 0:
        return 0
    for offset, count in enumerate(counts):
        excess -= count
        if excess <= 0:
            return bucket_leaves(first + offset, window_ms, buckets) - now_ms
    raise AssertionError("unreachable: the counts sum to at least the excess")


def seconds_until_window_ends(now: float, window_seconds: int) -> int:
    return max(1, math.ceil(window_seconds - now % window_seconds))


def refusal(kind: str, retry_after: int, *, email: bool = False) -> OtpError:
    """The error for a limit that refused; ``email`` words it for an address."""
    if kind == RateLimited.code:
        return RateLimited(retry_after)
    if kind == RANGE_DENIED:
        return RangeDenied()
    message = (email and EMAIL_LIMIT_MESSAGES.get(kind)) or LIMIT_MESSAGES[kind]
    return LimitExceeded(kind, message, retry_after=retry_after)


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
    # The conversion rule (``ConversionGuard``) on the same prefixes and countries.
    conversion: bool = True
    conversion_min_sends: int = 50
    conversion_country_min_sends: int = 200
    conversion_min_rate: float = 0.35


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
    # Codes per email domain in any hour (sub-windows, as the country budgets).
    email_domain_per_hour: int = 1000
    allowed_countries: frozenset[str] | None = None  # None: every country
    pumping: PumpingGuard = field(default_factory=PumpingGuard)
    lockout: Lockout = field(default_factory=Lockout)

    def check_country(self, phone: Phone) -> None:
        if self.allowed_countries is None:
            return
        if phone.region is None or phone.region not in self.allowed_countries:
            raise CountryNotAllowed()

    def send_quotas(self, phone: Phone) -> tuple[Quota, ...]:
        """A phone's few sends are logged exactly; the budgets, shared by many phones,
        are counted in sub-windows (state that does not grow with the budget)."""
        country = country_scope(phone)
        return (
            Quota("phone_send_limit", phone.e164, self.phone_sends, self.phone_window_seconds),
            Quota(
                "country_budget",
                f"country:{country}",
                self.country_sms_overrides.get(country, self.country_sms_per_hour),
                HOUR,
                buckets=BUDGET_BUCKETS,
            ),
            Quota(
                "global_budget", "global", self.global_sms_per_hour, HOUR, buckets=BUDGET_BUCKETS
            ),
        )

    def email_quotas(self, email: Email) -> tuple[Quota, ...]:
        """An address's sends are logged exactly, as a phone's (same limit and window);
        its domain's in sub-windows. Email counts in no SMS budget."""
        return (
            Quota("email_send_limit", email.address, self.phone_sends, self.phone_window_seconds),
            Quota(
                "email_domain_budget",
                f"domain:{email.domain}",
                self.email_domain_per_hour,
                HOUR,
                buckets=BUDGET_BUCKETS,
            ),
        )

    def email_distinct(self, email: Email, client_ip: str) -> tuple[DistinctQuota, ...]:
        """Distinct addresses per IP, counted apart from its phones (same cap and window)."""
        return (
            DistinctQuota(
                "ip_email_limit",
                f"ip:{client_ip}",
                email.address,
                self.ip_max_phones,
                self.ip_phones_window_seconds,
            ),
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

    def send_surges(self, ranges: tuple[str, str]) -> tuple[SurgeGuard, ...]:
        """The surge rule on a send's prefix and country (``ranges``)."""
        p = self.pumping
        if not p.enabled:
            return ()
        prefix, country = ranges
        return (
            SurgeGuard(
                "prefix_blocked",
                prefix,
                p.prefix_min_sends,
                p.factor,
                p.window_seconds,
                p.block_seconds,
            ),
            SurgeGuard(
                "country_blocked",
                country,
                p.country_min_sends,
                p.factor,
                p.window_seconds,
                p.block_seconds,
            ),
        )

    def ranges(self, phone: Phone) -> tuple[str, str]:
        """The number range (``prefix:<digits>``) and country (``country:<XX>``) a send
        is guarded and counted in."""
        prefix = phone.e164[1 : 1 + self.pumping.prefix_digits]
        return f"prefix:{prefix}", f"country:{country_scope(phone)}"

    def send_conversions(
        self, ranges: tuple[str, str], settle_seconds: int
    ) -> tuple[ConversionGuard, ...]:
        """The conversion rule on a send's prefix and country (``ranges``)."""
        p = self.pumping
        if not p.conversion:
            return ()
        prefix, country = ranges
        return (
            ConversionGuard(
                "prefix_blocked",
                prefix,
                p.conversion_min_sends,
                p.conversion_min_rate,
                settle_seconds,
                p.block_seconds,
            ),
            ConversionGuard(
                "country_blocked",
                country,
                p.conversion_country_min_sends,
                p.conversion_min_rate,
                settle_seconds,
                p.block_seconds,
            ),
        )


def override_candidates(phone: Phone) -> tuple[str, ...]:
    """Every override entry that covers ``phone``: each leading run of its digits as
    ``prefix:<digits>`` (``prefix:4``, ``prefix:44``...) and its ``country:<XX>``."""
    digits = phone.e164[1:]
    prefixes = tuple(f"prefix:{digits[:n]}" for n in range(1, len(digits) + 1))
    return (*prefixes, f"country:{country_scope(phone)}")


def country_scope(phone: Phone) -> str:
    """ISO region, or the calling code for numbers outside any region (``+800``)."""
    return phone.region or f"+{phone.country_code}"
