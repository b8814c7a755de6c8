"""The per-IP request limit and the abuse defences: every limit is shared by all
workers and instances on one store."""

from __future__ import annotations

from typing import Annotated, ClassVar

import phonenumbers
from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from otpgate.config.section import Section


class LimitSettings(Section):
    """The per-IP request limit (as the Node service's) and the abuse defences: per
    phone, per IP, per country and for the whole service, the pumping and conversion
    guards against toll fraud, and the lockout after failed verifies. Each is checked in
    the same atomic store step as the send or verify it guards."""

    SECTION_TITLE: ClassVar[str] = "Limits and abuse defence"

    rate_limit_max_requests: int = Field(
        5,
        ge=1,
        description="Requests per client IP per route in each RATE_LIMIT_WINDOW_MS (a fixed"
        " window, as the Node service, with its x-ratelimit-* headers); then 429"
        " rate_limited.",
    )
    rate_limit_window_ms: int = Field(
        60_000,
        ge=1000,
        description="The per-IP request limit's window, in milliseconds (the Node service's unit).",
    )
    otp_resend_cooldown_seconds: int = Field(
        60,
        ge=0,
        le=3600,
        description="Seconds before a phone or address may be sent another code (a new code"
        " replaces the old one); 0 turns the cooldown off.",
    )
    phone_send_limit: int = Field(
        5,
        ge=1,
        description="Codes sent to one phone or address in any span of"
        " PHONE_SEND_WINDOW_SECONDS (an exact sliding log); then 429 phone_send_limit.",
    )
    phone_send_window_seconds: int = Field(
        600, ge=1, le=86_400, description="The window of PHONE_SEND_LIMIT, in seconds."
    )
    ip_max_phones: int = Field(
        10,
        ge=1,
        description="Distinct phones one client IP may send to per IP_PHONES_WINDOW_SECONDS"
        " (addresses counted apart); then 429 ip_phone_limit.",
    )
    ip_phones_window_seconds: int = Field(
        3600,
        ge=1,
        le=86_400,
        description="The fixed, clock-aligned window of IP_MAX_PHONES, in seconds.",
    )
    country_sms_per_hour: int = Field(
        1000,
        ge=1,
        description="SMS to one country in any hour (counted in 6-minute sub-windows); then"
        " 429 country_budget.",
    )
    country_sms_budgets: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description="Per-country overrides of COUNTRY_SMS_PER_HOUR: comma-separated"
        " ISO=number entries, e.g. US=5000,GB=200.",
    )
    global_sms_per_hour: int = Field(
        10_000,
        ge=1,
        description="SMS for the whole service in any hour; then 503 global_budget.",
    )
    email_domain_per_hour: int = Field(
        1000,
        ge=1,
        description="Codes sent to one email domain (the part after @) in any hour; then 429"
        " email_domain_budget.",
    )
    allowed_countries: str | None = Field(
        None,
        description="Destination countries codes may be sent to: ISO codes (US,CA,GB) or *"
        " for all; others get 403 country_not_allowed. Required in production; unset in"
        " development allows every country.",
    )
    pumping_guard: bool = Field(
        True,
        description="Block a number prefix (or country) whose sends surge past its previous"
        " window: the defence against SMS pumping.",
    )
    pump_prefix_digits: int = Field(
        7,
        ge=2,
        le=12,
        description="Digits of the E.164 number, country code included, that make the"
        " prefix the pumping and conversion guards count by.",
    )
    pump_prefix_min_sends: int = Field(
        20,
        ge=1,
        description="Sends to a prefix in one PUMP_WINDOW_SECONDS that never count as a"
        " surge, whatever the baseline.",
    )
    pump_country_min_sends: int = Field(
        200,
        ge=1,
        description="Sends to a country in one PUMP_WINDOW_SECONDS that never count as a"
        " surge, whatever the baseline.",
    )
    pump_surge_factor: float = Field(
        5.0,
        ge=1.0,
        description="A window past this many times the previous window's sends (and past"
        " the minimum) is a surge: the send is refused and the range blocked.",
    )
    pump_window_seconds: int = Field(
        3600,
        ge=60,
        le=86_400,
        description="The pumping guard's fixed window, in seconds; the previous one is the"
        " baseline.",
    )
    pump_block_seconds: int = Field(
        21_600,
        ge=60,
        le=7 * 86_400,
        description="Seconds a range stays blocked after a surge or a conversion under"
        " CONVERSION_MIN_RATE (429 prefix_blocked or country_blocked).",
    )
    conversion_guard: bool = Field(
        True,
        description="Block a prefix (or country) whose settled sends of the last hour are"
        " verified at under CONVERSION_MIN_RATE; false keeps the counts, for the stats,"
        " without blocking.",
    )
    conversion_min_sends: int = Field(
        50,
        ge=1,
        description="Settled sends a prefix needs before its conversion is judged.",
    )
    conversion_country_min_sends: int = Field(
        200,
        ge=1,
        description="Settled sends a country needs before its conversion is judged.",
    )
    conversion_min_rate: float = Field(
        0.35,
        ge=0.0,
        le=1.0,
        description="The least share of settled sends verified (0 to 1) before a range is"
        " blocked; real sign-ups convert far above 0.35.",
    )
    phone_lockout_threshold: int = Field(
        10,
        ge=1,
        le=100,
        description="Consecutive failed verifies of a phone, across codes, from which each"
        " attempt must wait PHONE_LOCKOUT_BASE_SECONDS x 2^(failures - threshold) (429"
        " phone_locked); a success clears the count.",
    )
    phone_lockout_base_seconds: int = Field(
        60, ge=1, description="The first lockout wait, in seconds; it doubles per failure."
    )
    phone_lockout_max_seconds: int = Field(
        86_400, ge=1, description="The longest lockout wait, in seconds."
    )
    phone_max_consecutive_failures: int = Field(
        100,
        ge=1,
        le=100,
        description="Consecutive failed verifies after which a phone stays locked until its"
        " failure record lapses (at most 100; not below PHONE_LOCKOUT_THRESHOLD).",
    )
    phone_failure_memory_seconds: int = Field(
        30 * 86_400,
        ge=3600,
        description="Seconds a phone's failed verifies are remembered after the last one"
        " (at least an hour).",
    )

    @field_validator("country_sms_budgets", mode="before")
    @classmethod
    def _parse_budgets(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        budgets: dict[str, object] = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            region, sep, amount = part.partition("=")
            if not sep:
                raise ValueError(f"{part!r} is not COUNTRY=NUMBER")
            budgets[region.strip().upper()] = amount.strip()
        return budgets

    @field_validator("country_sms_budgets")
    @classmethod
    def _check_budgets(cls, value: dict[str, int]) -> dict[str, int]:
        for region, amount in value.items():
            _check_region(region)
            if amount < 1:
                raise ValueError(f"{region}: budget must be at least 1")
        return value

    @field_validator("allowed_countries")
    @classmethod
    def _check_countries(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "*":
            return value
        regions = [p.strip().upper() for p in value.split(",") if p.strip()]
        if not regions:
            raise ValueError("list at least one ISO country code, or * for all")
        for region in regions:
            _check_region(region)
        return ",".join(regions)

    @property
    def allowed_regions(self) -> frozenset[str] | None:
        """None means every country."""
        if self.allowed_countries is None or self.allowed_countries.strip() == "*":
            return None
        return frozenset(self.allowed_countries.split(","))


def _check_region(region: str) -> None:
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{region!r} is not an ISO 3166 country code")
