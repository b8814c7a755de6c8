"""The one typed settings object, read from the environment and ``.env``.

Each component declares its own fields in a module of its own (``config/runtime.py``,
``config/store.py``...), as a ``Section``; ``Settings`` composes them, loads the
environment and runs the checks that need more than one variable. Variable names are
the Node service's where it had one (PORT, HOST, AWS_*, OTP_*, REDIS_URL, LOG_LEVEL,
RATE_LIMIT_*, SNS_*, NODE_ENV), so an existing ``.env`` keeps working. Anything invalid
stops start-up with the variable's name. ``docs/reference/settings.md`` and
``.env.example`` are generated from these models (``make settings-reference``).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from otpgate.config import delivery
from otpgate.config.api_keys import ApiKeySettings
from otpgate.config.channels import ChannelSettings
from otpgate.config.codes import CodeSettings
from otpgate.config.credentials import CredentialSettings, read_key_file
from otpgate.config.events import EventSettings
from otpgate.config.http import HttpSettings
from otpgate.config.limits import LimitSettings
from otpgate.config.messages import MessageSettings
from otpgate.config.observability import ObservabilitySettings
from otpgate.config.runtime import RuntimeSettings
from otpgate.config.section import Section
from otpgate.config.sms import SmsSettings
from otpgate.config.store import StoreSettings, redis_cluster_problems, redis_tls_problems
from otpgate.config.tokens import TokenSettings
from otpgate.config.verify_v2 import VerifyV2Settings
from otpgate.domain.errors import InvalidPhoneNumber
from otpgate.domain.phone import parse_phone

# On top of an SMS's worst case: the store steps around it and the answer's write.
SHUTDOWN_MARGIN_SECONDS = 5.0

# Every component's settings, in the order of the reference and of ``Settings``' fields.
SECTIONS: tuple[type[Section], ...] = (
    RuntimeSettings,
    ObservabilitySettings,
    HttpSettings,
    ApiKeySettings,
    CodeSettings,
    TokenSettings,
    StoreSettings,
    CredentialSettings,
    LimitSettings,
    SmsSettings,
    ChannelSettings,
    MessageSettings,
    EventSettings,
    VerifyV2Settings,
)


class ConfigError(Exception):
    """Start-up refused: the message names each offending variable."""


# The bases in the reverse order of SECTIONS: pydantic lists the last base's fields first.
class Settings(
    VerifyV2Settings,
    EventSettings,
    MessageSettings,
    ChannelSettings,
    SmsSettings,
    LimitSettings,
    CredentialSettings,
    StoreSettings,
    TokenSettings,
    CodeSettings,
    ApiKeySettings,
    HttpSettings,
    ObservabilitySettings,
    RuntimeSettings,
    BaseSettings,
):
    """Every component's settings, from the environment and ``.env``."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
        # A refused value is never shown, not even by a ValidationError's own text: it may
        # be a key or a secret (``_describe`` below builds the message without it anyway).
        hide_input_in_errors=True,
    )

    @model_validator(mode="after")
    def _settings_fit_together(self) -> Settings:
        """Every check that needs more than one variable, all run: one line per problem,
        so a run names everything there is to fix, not the first thing found."""
        problems = [line for check in CROSS_CHECKS for line in check(self)]
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @property
    def delivery_worst_case_seconds(self) -> float:
        """The longest one request's delivery can take: an SMS's worst case per channel
        of the longest fallback chain (WhatsApp and calls go through the webhook, on the
        same budget), or one email's SMTP exchange."""
        longest = max([1, *(1 + len(rest) for rest in self.channel_fallback.values())])
        email = self.smtp_timeout_seconds if self.smtp_host is not None else 0.0
        return max(longest * self.sms_worst_case_seconds, email)

    @property
    def effective_shutdown_timeout(self) -> float:
        """SHUTDOWN_TIMEOUT_SECONDS, or long enough for a send in flight to finish."""
        if self.shutdown_timeout_seconds is not None:
            return self.shutdown_timeout_seconds
        return self.delivery_worst_case_seconds + SHUTDOWN_MARGIN_SECONDS

    @property
    def log_json(self) -> bool:
        return self.log_format == "json" or (self.log_format == "auto" and self.production)

    @property
    def effective_sms_provider(self) -> Literal["sns", "console", "webhook"]:
        """Console only when asked for, or in development when nothing was chosen."""
        if self.sms_provider is not None:
            return self.sms_provider
        return "sns" if self.production else "console"


def lockout_problems(settings: Settings) -> list[str]:
    if settings.phone_lockout_threshold > settings.phone_max_consecutive_failures:
        return ["PHONE_LOCKOUT_THRESHOLD: must not exceed PHONE_MAX_CONSECUTIVE_FAILURES"]
    return []


def production_problems(settings: Settings) -> list[str]:
    """What production needs and development does without: each missing one named."""
    if not settings.production:
        return []
    problems = []
    if settings.allowed_countries is None:
        problems.append(
            "ALLOWED_COUNTRIES: required when APP_ENV=production"
            " (ISO codes such as US,CA, or * to allow every country)"
        )
    if settings.sms_provider == "console":
        problems.append(
            "SMS_PROVIDER: 'console' prints codes and is refused when APP_ENV=production"
        )
    if settings.api_auth is None:
        problems.append(
            "API_AUTH: required when APP_ENV=production (off, optional or required;"
            " required needs API_KEYS)"
        )
    problems += hash_secret_problems(settings)
    problems += factor_key_problems(settings)
    if settings.token_signing_keys_file is None:
        problems.append(
            "TOKEN_SIGNING_KEYS_FILE: required when APP_ENV=production"
            " (EC P-256 private keys in PEM; the first signs)"
        )
    plain = [o for o in settings.widget_allowed_origins if not delivery.https_or_loopback(o)]
    if plain:
        problems.append(
            "WIDGET_ALLOWED_ORIGINS: must be https:// (or a loopback address) when"
            f" APP_ENV=production, not {', '.join(plain)}; the widget hands them a token"
        )
    return problems


def hash_secret_problems(settings: Settings) -> list[str]:
    """Production: OTP_HASH_SECRET, or OTP_HASH_SECRET_FILE set to a file that holds it
    (which production never creates: every instance sharing a store needs the same key)."""
    secret = settings.otp_hash_secret
    if secret is not None:
        if len(secret.get_secret_value()) < 32:
            return ["OTP_HASH_SECRET: must be at least 32 characters"]
        return []
    if "otp_hash_secret_file" not in settings.model_fields_set:
        return [
            "OTP_HASH_SECRET: required when APP_ENV=production (32+ random characters), or"
            " OTP_HASH_SECRET_FILE naming a file that holds it"
        ]
    path = settings.otp_hash_secret_file
    try:
        key = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not text"
        return [f"OTP_HASH_SECRET_FILE: cannot read {path}: {why}"]
    if len(key) < 32:
        return [f"OTP_HASH_SECRET_FILE: {path} holds a key shorter than 32 characters"]
    return []


def factor_key_problems(settings: Settings) -> list[str]:
    """Production: FACTOR_ENCRYPTION_KEYS, or FACTOR_ENCRYPTION_KEY_FILE set to a file that
    holds one key (which production never creates, as OTP_HASH_SECRET_FILE)."""
    if settings.factor_encryption_keys is not None:
        return []
    if "factor_encryption_key_file" not in settings.model_fields_set:
        return [
            "FACTOR_ENCRYPTION_KEYS: required when APP_ENV=production (id:key entries, each"
            " key 32 random bytes in base64; the first encrypts), or FACTOR_ENCRYPTION_KEY_FILE"
            " naming a file that holds one such key"
        ]
    path = settings.factor_encryption_key_file
    try:
        read_key_file(path)
    except OSError as exc:
        return [f"FACTOR_ENCRYPTION_KEY_FILE: cannot read {path}: {exc.strerror}"]
    except ValueError as exc:
        return [f"FACTOR_ENCRYPTION_KEY_FILE: {path}: {exc}"]
    return []


def api_key_problems(settings: Settings) -> list[str]:
    problems = []
    if settings.api_auth == "required" and not settings.api_keys:
        problems.append(
            "API_AUTH: 'required' needs at least one key in API_KEYS (name:key entries)"
        )
    # An admin key that also calls the API would be held by every backend (and sometimes
    # a browser) that calls it: each admin key must be a key of its own.
    others = {digest: "API_KEYS" for digest in settings.api_keys.values()}
    if settings.verify_v2_auth_token is not None:
        others[settings.verify_v2_auth_token] = "VERIFY_V2_AUTH_TOKEN"
    problems += [
        f"ADMIN_API_KEYS: entry {index} ({name}) is also a key in {others[digest]};"
        " an admin key must be a key of its own"
        for index, (name, digest) in enumerate(settings.admin_api_keys.items(), start=1)
        if digest in others
    ]
    return problems


def verify_v2_problems(settings: Settings) -> list[str]:
    given = {
        "VERIFY_V2_ACCOUNT_SID": settings.verify_v2_account_sid is not None,
        "VERIFY_V2_AUTH_TOKEN": settings.verify_v2_auth_token is not None,
        "VERIFY_V2_SERVICES": bool(settings.verify_v2_services),
    }
    if not any(given.values()):
        return []
    return [
        f"{name}: required when any VERIFY_V2_* variable is set"
        " (the Verify v2 API needs the account sid, the token and a service)"
        for name, isset in given.items()
        if not isset
    ]


def message_problems(settings: Settings) -> list[str]:
    if "{purpose}" in settings.sms_message_template and not settings.sms_show_purpose:
        return [
            "SMS_MESSAGE_TEMPLATE: uses {purpose}, which is shown only with"
            " SMS_SHOW_PURPOSE=true (a purpose may be an internal id)"
        ]
    return []


def port_problems(settings: Settings) -> list[str]:
    problems = []
    if settings.metrics_port is not None and settings.metrics_port == settings.port:
        problems.append("METRICS_PORT: must differ from PORT (unset it to serve /metrics on PORT)")
    if settings.admin_port is None:
        return problems
    if not settings.admin_api_keys:
        problems.append(
            "ADMIN_PORT: set without ADMIN_API_KEYS; the admin routes are off until"
            " ADMIN_API_KEYS names a key, so the port would serve nothing"
        )
    for name, port in (("PORT", settings.port), ("METRICS_PORT", settings.metrics_port)):
        if settings.admin_port == port:
            problems.append(f"ADMIN_PORT: must differ from {name}")
    return problems


def event_problems(settings: Settings) -> list[str]:
    url, secret = settings.event_webhook_url, settings.event_webhook_secret
    if url is None and secret is None:
        return []
    if url is None:
        return ["EVENT_WEBHOOK_URL: required with EVENT_WEBHOOK_SECRET"]
    if secret is None:
        return ["EVENT_WEBHOOK_SECRET: required with EVENT_WEBHOOK_URL"]
    if len(secret.get_secret_value()) < 32:
        return ["EVENT_WEBHOOK_SECRET: must be at least 32 characters"]
    if settings.production and not delivery.https_or_loopback(url):
        return ["EVENT_WEBHOOK_URL: must be https:// (or a loopback address) in production"]
    return []


def delivery_problems(settings: Settings) -> list[str]:
    """Checks that need more than one variable; one "VARIABLE: reason" line each."""
    problems = event_problems(settings)
    uses_webhook = settings.effective_sms_provider == "webhook" or settings.webhook_channels
    if uses_webhook:
        why = (
            "SMS_PROVIDER=webhook"
            if settings.effective_sms_provider == "webhook"
            else "WEBHOOK_CHANNELS is set"
        )
        url, secret = settings.sms_webhook_url, settings.sms_webhook_secret
        if url is None:
            problems.append(f"SMS_WEBHOOK_URL: required when {why}")
        elif settings.production and not delivery.https_or_loopback(url):
            problems.append(
                "SMS_WEBHOOK_URL: must be https:// (or a loopback address) "
                "when APP_ENV=production; the payload carries the code"
            )
        if secret is None:
            problems.append(f"SMS_WEBHOOK_SECRET: required when {why}")
        elif len(secret.get_secret_value()) < 32:
            problems.append("SMS_WEBHOOK_SECRET: must be at least 32 characters")
    problems += smtp_problems(settings)
    enabled = settings.enabled_channels
    for first, rest in settings.channel_fallback.items():
        off = [c for c in (first, *rest) if c not in enabled]
        if off:
            problems.append(
                f"CHANNEL_FALLBACK: {'>'.join((first, *rest))}: {', '.join(off)} not enabled"
                " (WhatsApp and calls need WEBHOOK_CHANNELS)"
            )
    for index, (number, code) in enumerate(settings.test_phone_numbers.items(), start=1):
        if len(code.get_secret_value()) != settings.otp_length:
            problems.append(
                f"TEST_PHONE_NUMBERS: entry {index}: the code must have OTP_LENGTH "
                f"({settings.otp_length}) digits"
            )
        try:
            parse_phone(number, settings.phone_number_check)
        except InvalidPhoneNumber:
            problems.append(
                f"TEST_PHONE_NUMBERS: entry {index}: the number fails "
                f"PHONE_NUMBER_CHECK={settings.phone_number_check}, so it could never be used"
            )
    if (
        settings.production
        and settings.test_phone_numbers
        and not settings.allow_test_numbers_in_production
    ):
        problems.append(
            "TEST_PHONE_NUMBERS: refused when APP_ENV=production (anyone who learns one "
            "can verify as it); set ALLOW_TEST_NUMBERS_IN_PRODUCTION=true to allow"
        )
    return problems


def smtp_problems(settings: Settings) -> list[str]:
    """The SMTP_* variables and EMAIL_FROM against each other."""
    others = {
        "SMTP_PORT": settings.smtp_port is not None,
        "SMTP_USERNAME": settings.smtp_username is not None,
        "SMTP_PASSWORD": settings.smtp_password is not None,
        "SMTP_STARTTLS": settings.smtp_starttls is not None,
        "SMTP_TLS": settings.smtp_tls,
        "SMTP_TLS_CA_FILE": settings.smtp_tls_ca_file is not None,
        "EMAIL_FROM": settings.email_from is not None,
    }
    if settings.smtp_host is None:
        return [
            f"{name}: set without SMTP_HOST, which turns the email channel on"
            for name, isset in others.items()
            if isset
        ]
    problems = []
    if settings.email_from is None:
        problems.append("EMAIL_FROM: required when SMTP_HOST is set (the emails' sender)")
    if (settings.smtp_username is None) != (settings.smtp_password is None):
        given, missing = (
            ("SMTP_USERNAME", "SMTP_PASSWORD")
            if settings.smtp_username is not None
            else ("SMTP_PASSWORD", "SMTP_USERNAME")
        )
        problems.append(f"{missing}: required with {given} (SMTP AUTH needs both)")
    if settings.smtp_tls and settings.smtp_starttls:
        problems.append(
            "SMTP_STARTTLS: cannot be true with SMTP_TLS (the connection is TLS from the"
            " start; STARTTLS upgrades a plain one)"
        )
    plain = not settings.smtp_tls and not settings.effective_smtp_starttls
    if settings.smtp_tls_ca_file is not None:
        problems += smtp_ca_problems(settings.smtp_tls_ca_file, plain)
    if plain and settings.production and not delivery.is_loopback(settings.smtp_host):
        problems.append(
            "SMTP_STARTTLS: refused as false when APP_ENV=production, unless SMTP_TLS is set"
            " or SMTP_HOST is a loopback address; the emails carry the codes"
        )
    return problems


def smtp_ca_problems(ca_file: Path, plain: bool) -> list[str]:
    """SMTP_TLS_CA_FILE loaded as the sender will load it, once, at start-up."""
    if plain:
        return [
            "SMTP_TLS_CA_FILE: set, but the connection is plain (SMTP_STARTTLS=false"
            " without SMTP_TLS); a CA is for TLS"
        ]
    from otpgate.delivery.smtp import tls_context

    try:
        tls_context(str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc.__class__.__name__
        return [f"SMTP_TLS_CA_FILE: cannot load CA certificates from {ca_file} ({why})"]
    return []


def _store_problems(settings: Settings) -> list[str]:
    return redis_tls_problems(settings) + redis_cluster_problems(settings)


# Every check of ``Settings`` that spans variables, in the order their lines are shown.
CROSS_CHECKS: tuple[Callable[[Settings], list[str]], ...] = (
    production_problems,
    api_key_problems,
    _store_problems,
    delivery_problems,
    lockout_problems,
    verify_v2_problems,
    message_problems,
    port_problems,
)


def load_settings(**overrides: object) -> Settings:
    """Build settings or raise ConfigError with one line per bad variable: those refused
    on their own and, in the same run, what the checks that span variables find."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = _lines(exc)
        lines += _problems_besides(exc, overrides)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def _problems_besides(exc: ValidationError, overrides: dict[str, object]) -> list[str]:
    """pydantic runs the checks that span variables only once every variable parsed: run
    them again with the refused variables at their defaults, and keep the lines about
    the other variables only (a missing ALLOWED_COUNTRIES besides a malformed API_KEYS)."""
    refused = {str(err["loc"][0]).lower() for err in exc.errors() if err["loc"]}
    if not refused:
        return []
    defaults: dict[str, object] = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = {name, *(str(c).lower() for c in getattr(alias, "choices", [alias]) if c)}
        if names & refused:
            defaults[name] = field.get_default(call_default_factory=True)
    try:
        Settings(**{**overrides, **defaults})  # type: ignore[arg-type]
    except ValidationError as again:
        # A line about a refused variable, or that names one, spoke of its default.
        named = re.compile(r"\b(?:" + "|".join(re.escape(r.upper()) for r in refused) + r")\b")
        return [line for line in _lines(again) if not named.search(line)]
    return []


def _lines(exc: ValidationError) -> list[str]:
    """One "VARIABLE: reason" line per problem."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        name = loc[0].upper() if loc else ""
        msg = err["msg"].removeprefix("Value error, ")
        # Never echo the offending input: it may be a secret.
        if name:
            lines.append(f"{name}: {msg}")
        else:
            lines += msg.split("\n  ")
    return lines
