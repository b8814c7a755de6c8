"""Builds the object graph from settings: the one place that picks implementations."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from otpgate.components import AdminConfig, Components, HttpConfig, VerifyV2Config
from otpgate.config.api_keys import ApiAuth
from otpgate.config.hash_key import load_hash_key
from otpgate.config.settings import ConfigError, Settings
from otpgate.delivery.event_relay import EventRelay, RelayConfig
from otpgate.delivery.retry import RetryPolicy
from otpgate.domain.admin import DefenceAdmin
from otpgate.domain.catalog import FALLBACK_LANGUAGE, TemplateCatalog, uses_purpose
from otpgate.domain.codes import CodeHasher
from otpgate.domain.factors.ports import CredentialStore
from otpgate.domain.factors.service import FactorPolicy, FactorService
from otpgate.domain.factors.values import TotpConfig
from otpgate.domain.fixed_codes import TestNumbers
from otpgate.domain.limits import AbusePolicy, Lockout, PumpingGuard
from otpgate.domain.message import MessageTemplate
from otpgate.domain.policy import OtpPolicy
from otpgate.domain.ports import (
    ChannelSender,
    DefenceStore,
    EventLog,
    OtpStore,
    SendJournal,
    SmsSender,
)
from otpgate.domain.request_limit import RequestLimiter
from otpgate.domain.service import OtpService
from otpgate.runtime import fast_path
from otpgate.templates import SHIPPED_ORIGIN, TemplateFileError, load_catalog
from otpgate.tokens.keys import KeyFileError, KeySet, dev_keys, load_keys
from otpgate.tokens.signer import JwtSigner, TokenConfig

if TYPE_CHECKING:
    from otpgate.credentials.schema import SchemaState
    from otpgate.delivery.smtp import SmtpConfig
    from otpgate.delivery.sns import SnsConfig
    from otpgate.delivery.webhook import WebhookConfig
    from otpgate.store.redis.store import RedisStore

log = logging.getLogger("otpgate")


class Store(OtpStore, DefenceStore, EventLog, Protocol):
    """What every store backend offers: the request path's steps, what operators see
    and undo of the defences, and the queue of events."""


def build_store(settings: Settings) -> Store:
    if settings.redis_url:
        return build_redis_store(settings)
    from otpgate.store.sqlite import SqliteStore

    return SqliteStore(settings.sqlite_path, events=settings.events_on)


def build_journal(settings: Settings) -> SendJournal:
    from otpgate.store.journal import FileJournal

    return FileJournal(settings.send_journal_dir)


def build_redis_store(settings: Settings) -> RedisStore:
    from otpgate.store.redis.store import RedisStore
    from otpgate.store.redis.url import parse_redis_url

    assert settings.redis_url  # the caller's choice
    return RedisStore(
        parse_redis_url(settings.redis_url),  # checked by settings
        prefix=settings.redis_key_prefix,
        timeout=settings.redis_timeout_seconds,
        fast_path=fast_path.enabled(fast_path.REDIS_CONNECTION, settings.fast_path),
        tls=settings.redis_tls,
        events=settings.events_on,
        phone_state_seconds=phone_state_seconds(settings),
    )


def phone_state_seconds(settings: Settings) -> int:
    """The longest any part of a phone's short-lived state lives: its code, its resend
    cooldown, its send window (the Redis store's records are filed by it)."""
    return max(
        settings.otp_ttl_seconds,
        settings.otp_resend_cooldown_seconds,
        settings.phone_send_window_seconds,
    )


def check_store(settings: Settings) -> None:
    """Before any worker starts: ConfigError when the store can never work as configured.

    Redis only (SQLite's file is opened by each worker). A certificate that does not
    verify, a master name no sentinel knows, or a server that wants a client certificate
    when REDIS_TLS_CERT_FILE is unset stops start-up naming REDIS_URL (and the setting to
    change); Redis unreachable is an outage, not a configuration error: a warning, and
    503s until it answers.
    """
    if not settings.redis_url:
        return
    from otpgate.domain.errors import StoreUnavailable

    async def check() -> str | None:
        store = build_redis_store(settings)
        try:
            return await store.configuration_problem()
        except StoreUnavailable as exc:
            log.warning(
                "redis store not reachable at start-up (%s); answering 503 until it is",
                exc.__cause__,
            )
            return None
        finally:
            await store.close()

    problem = asyncio.run(check())
    if problem is not None:
        raise ConfigError(f"REDIS_URL: {problem}")


def recover_sends(settings: Settings) -> int:
    """Before any worker starts: void the sends that workers of an earlier run left
    unsettled (killed mid-send, or stopped with a send's store step still queued), so
    a retry is answered as if they never happened. What the store does not answer
    stays in the journal, for the workers to void. How many were taken over."""
    from otpgate.domain.errors import StoreUnavailable
    from otpgate.domain.voids import PendingVoids

    async def recover() -> int:
        store = build_store(settings)
        voids = PendingVoids(store, build_journal(settings))
        try:
            return await voids.recover()
        except StoreUnavailable:
            return 0
        finally:
            await voids.close()
            await store.close()

    return asyncio.run(recover())


def build_sender(settings: Settings) -> SmsSender:
    if settings.effective_sms_provider == "console":
        from otpgate.delivery.console import ConsoleSender

        return ConsoleSender()
    if settings.effective_sms_provider == "webhook":
        from otpgate.delivery.webhook import WebhookSender

        return WebhookSender(webhook_config(settings))
    from otpgate.delivery.sns import SnsSender

    return SnsSender(sns_config(settings))


def build_channel_senders(
    settings: Settings, sms_sender: SmsSender | None = None
) -> dict[str, ChannelSender]:
    """The sender of each channel besides SMS that the settings enable: SMTP for email,
    the webhook for WEBHOOK_CHANNELS (the SMS sender itself when it is that webhook)."""
    senders: dict[str, ChannelSender] = {}
    if settings.smtp_host is not None:
        from otpgate.delivery.smtp import SmtpSender

        senders["email"] = SmtpSender(smtp_config(settings))
    if settings.webhook_channels:
        from otpgate.delivery.webhook import WebhookSender

        webhook = (
            sms_sender
            if isinstance(sms_sender, WebhookSender)
            else WebhookSender(webhook_config(settings))
        )
        for channel in settings.webhook_channels:
            senders[channel] = webhook
    return senders


def smtp_config(settings: Settings) -> SmtpConfig:
    from otpgate.delivery.smtp import SmtpConfig

    assert settings.smtp_host and settings.email_from  # checked by settings
    password = settings.smtp_password
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.effective_smtp_port,
        sender=settings.email_from,
        username=settings.smtp_username,
        password=password.get_secret_value() if password is not None else None,
        starttls=settings.effective_smtp_starttls,
        tls=settings.smtp_tls,
        timeout=settings.smtp_timeout_seconds,
        ca_file=str(settings.smtp_tls_ca_file) if settings.smtp_tls_ca_file else None,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.sms_retry_max_attempts,
        max_seconds=settings.sms_retry_max_seconds,
    )


def webhook_config(settings: Settings) -> WebhookConfig:
    from otpgate.delivery.webhook import WebhookConfig

    assert settings.sms_webhook_url and settings.sms_webhook_secret  # checked by settings
    return WebhookConfig(
        url=settings.sms_webhook_url,
        secret=settings.sms_webhook_secret.get_secret_value().encode(),
        connect_timeout=settings.sms_connect_timeout_seconds,
        read_timeout=settings.sms_read_timeout_seconds,
        retry=retry_policy(settings),
    )


def sns_config(settings: Settings) -> SnsConfig:
    from otpgate.delivery.sns import SnsConfig

    credentials: dict[str, str] = {}
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        credentials["aws_access_key_id"] = settings.aws_access_key_id
        credentials["aws_secret_access_key"] = settings.aws_secret_access_key.get_secret_value()
        if settings.aws_session_token:
            credentials["aws_session_token"] = settings.aws_session_token.get_secret_value()
    return SnsConfig(
        region=settings.aws_region,
        endpoint_url=settings.sns_endpoint_url,
        sms_type=settings.sns_sms_type,
        sender_id=settings.sns_sms_sender_id,
        origination_number=settings.sns_origination_number,
        max_price=settings.sns_max_price,
        check_opt_out=settings.sns_check_opt_out,
        connect_timeout=settings.sms_connect_timeout_seconds,
        read_timeout=settings.sms_read_timeout_seconds,
        credentials=credentials,
        retry=retry_policy(settings),
        fast_path=fast_path.enabled(fast_path.SNS_PUBLISH, settings.fast_path),
    )


def api_auth(settings: Settings) -> ApiAuth:
    """The HTTP layer's view of API_AUTH and API_KEYS: the mode, each key's name and digest."""
    return ApiAuth.from_digests(settings.effective_api_auth, settings.api_keys)


def admin_auth(settings: Settings) -> ApiAuth:
    """ADMIN_API_KEYS, checked as API keys are; an admin route always needs one."""
    return ApiAuth.from_digests("required", settings.admin_api_keys)


def load_token_keys(settings: Settings) -> KeySet:
    """TOKEN_SIGNING_KEYS_FILE's keys, or in development the key kept at TOKEN_DEV_KEY_FILE
    (created when missing). Read once at start-up: a file that cannot be used stops the
    service with a ConfigError naming the variable.
    """
    given = settings.token_signing_keys_file
    try:
        if given is not None:
            return load_keys(given)
        return dev_keys(settings.token_dev_key_file)
    except KeyFileError as exc:
        name = "TOKEN_SIGNING_KEYS_FILE" if given is not None else "TOKEN_DEV_KEY_FILE"
        raise ConfigError(f"{name}: {exc}") from None


def existing_token_keys(settings: Settings) -> KeySet | None:
    """The keys, as ``load_token_keys`` reads them, or None when the development key is yet
    to be created (``check-config`` creates nothing)."""
    if settings.token_signing_keys_file is None and not settings.token_dev_key_file.exists():
        return None
    return load_token_keys(settings)


def token_config(settings: Settings) -> TokenConfig:
    return TokenConfig(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        ttl_seconds=settings.token_ttl_seconds,
    )


def build_policy(settings: Settings) -> OtpPolicy:
    return OtpPolicy(
        length=settings.otp_length,
        ttl_seconds=settings.otp_ttl_seconds,
        max_attempts=settings.otp_max_attempts,
        verification_retention_seconds=settings.verification_retention_seconds,
        phone_check=settings.phone_number_check,
        texts_to_landlines=settings.sms_to_landlines,
        message=build_message(settings),
        test_numbers=TestNumbers.from_mapping(
            {n: c.get_secret_value() for n, c in settings.test_phone_numbers.items()}
        ),
    )


def build_limits(settings: Settings) -> AbusePolicy:
    s = settings
    return AbusePolicy(
        resend_cooldown_seconds=s.otp_resend_cooldown_seconds,
        phone_sends=s.phone_send_limit,
        phone_window_seconds=s.phone_send_window_seconds,
        ip_max_phones=s.ip_max_phones,
        ip_phones_window_seconds=s.ip_phones_window_seconds,
        country_sms_per_hour=s.country_sms_per_hour,
        country_sms_overrides=dict(s.country_sms_budgets),
        global_sms_per_hour=s.global_sms_per_hour,
        email_domain_per_hour=s.email_domain_per_hour,
        allowed_countries=s.allowed_regions,
        pumping=PumpingGuard(
            enabled=s.pumping_guard,
            prefix_digits=s.pump_prefix_digits,
            prefix_min_sends=s.pump_prefix_min_sends,
            country_min_sends=s.pump_country_min_sends,
            factor=s.pump_surge_factor,
            window_seconds=s.pump_window_seconds,
            block_seconds=s.pump_block_seconds,
            conversion=s.conversion_guard,
            conversion_min_sends=s.conversion_min_sends,
            conversion_country_min_sends=s.conversion_country_min_sends,
            conversion_min_rate=s.conversion_min_rate,
        ),
        lockout=Lockout(
            threshold=s.phone_lockout_threshold,
            base_seconds=s.phone_lockout_base_seconds,
            max_seconds=s.phone_lockout_max_seconds,
            hard_cap=s.phone_max_consecutive_failures,
            memory_seconds=s.phone_failure_memory_seconds,
        ),
    )


def instrument(
    settings: Settings, store: OtpStore, sender: SmsSender
) -> tuple[OtpStore, SmsSender]:
    if not settings.metrics_enabled:
        return store, sender
    from otpgate.observability.metrics import MeteredSender, MeteredStore

    tallied = fast_path.enabled(fast_path.METRIC_TALLIES, settings.fast_path)
    return MeteredStore(store, tallied=tallied), MeteredSender(sender, tallied=tallied)


def instrument_channels(
    settings: Settings, senders: Mapping[str, ChannelSender]
) -> dict[str, ChannelSender]:
    if not settings.metrics_enabled:
        return dict(senders)
    from otpgate.observability.metrics import MeteredChannelSender

    tallied = fast_path.enabled(fast_path.METRIC_TALLIES, settings.fast_path)
    metered: list[tuple[ChannelSender, ChannelSender]] = []  # one wrapper per sender
    timed: dict[str, ChannelSender] = {}
    for channel, sender in senders.items():
        wrapper = next((w for s, w in metered if s is sender), None)
        if wrapper is None:
            wrapper = MeteredChannelSender(sender, tallied=tallied)
            metered.append((sender, wrapper))
        timed[channel] = wrapper
    return timed


def load_templates(settings: Settings) -> TemplateCatalog:
    """The shipped templates with TEMPLATES_DIR's on top, read and checked once: a file
    that cannot be used stops start-up with a ConfigError naming the variable and file.
    """
    try:
        catalog = load_catalog(settings.templates_dir)
    except TemplateFileError as exc:
        raise ConfigError(f"TEMPLATES_DIR: {exc}") from None
    if not settings.sms_show_purpose:
        for _, template in catalog.items():
            if uses_purpose(template.text):
                raise ConfigError(
                    f"TEMPLATES_DIR: {template.origin}: uses {{purpose}}, which is shown only"
                    " with SMS_SHOW_PURPOSE=true (a purpose may be an internal id)"
                )
    return catalog


def build_message(settings: Settings, catalog: TemplateCatalog | None = None) -> MessageTemplate:
    return MessageTemplate(
        template=settings.english_sms_template,
        app=settings.sms_app_name,
        webotp_domain=settings.sms_webotp_domain,
        android_app_hash=settings.sms_android_app_hash,
        show_purpose=settings.sms_show_purpose,
        catalog=catalog if catalog is not None else load_templates(settings),
    )


def template_warnings(settings: Settings) -> list[str]:
    """Each language's SMS that needs more than one segment, and a TEMPLATES_DIR file
    that SMS_MESSAGE_TEMPLATE shadows."""
    catalog = load_templates(settings)
    message = build_message(settings, catalog)
    warnings = message.fit_warnings(settings.otp_length, settings.otp_ttl_seconds)
    english = catalog.template("sms", FALLBACK_LANGUAGE)
    if settings.english_sms_template is not None and not english.origin.startswith(SHIPPED_ORIGIN):
        warnings.append(
            f"TEMPLATES_DIR: {english.origin} is not used: SMS_MESSAGE_TEMPLATE is set,"
            " and it is the English SMS"
        )
    return warnings


def start_up_warnings(settings: Settings) -> list[str]:
    """Settings that work but cost money or surprise users; logged at start-up."""
    warnings = template_warnings(settings)
    if (
        settings.shutdown_timeout_seconds is not None
        and settings.shutdown_timeout_seconds < settings.delivery_worst_case_seconds
    ):
        warnings.append(
            f"SHUTDOWN_TIMEOUT_SECONDS: {settings.shutdown_timeout_seconds:g}s is shorter than "
            f"one SMS send can take ({settings.delivery_worst_case_seconds:g}s); a send in "
            "flight at shutdown may be cut off (answered 503; its code stays valid)"
        )
    if settings.api_auth == "optional" and not settings.api_keys:
        warnings.append(
            "API_AUTH: optional with no API_KEYS: no key can be valid, so every request "
            "that sends one is refused (401)"
        )
    if settings.widget_allowed_origins and settings.effective_api_auth == "required":
        warnings.append(
            "WIDGET_ALLOWED_ORIGINS: set with API_AUTH=required: the widget's page calls the "
            "API without a key, so its every request is refused (401)"
        )
    if settings.test_phone_numbers:
        warnings.append(
            f"TEST_PHONE_NUMBERS: test numbers active: {len(settings.test_phone_numbers)}; "
            "they receive no SMS and accept their fixed codes"
        )
    return warnings


# Set by `otpgate serve` once it has logged the start-up warnings, for its workers
# (which inherit it) not to log them again, each of them.
START_UP_WARNED_ENV = "OTPGATE_START_UP_WARNED"


def log_start_up_warnings(settings: Settings) -> None:
    for warning in start_up_warnings(settings):
        log.warning(warning)


def build_components(
    settings: Settings,
    *,
    store: Store | None = None,
    sender: SmsSender | None = None,
    clock: Callable[[], float] = time.time,
    channels: Mapping[str, ChannelSender] | None = None,
    warn: bool = True,
) -> Components:
    """``clock`` is what every use case reads the time from (a test moves it);
    ``channels``, when given, are the senders of the channels besides SMS; ``warn``
    logs the start-up warnings (a worker of `otpgate serve` leaves them to it)."""
    if warn:
        log_start_up_warnings(settings)
    token_keys = load_token_keys(settings)
    store = store or build_store(settings)
    sender = sender or build_sender(settings)
    channel_senders = (
        dict(channels) if channels is not None else build_channel_senders(settings, sender)
    )
    # The use cases get timed versions; Components keeps the plain ones (readiness, close).
    used_store, used_sender = instrument(settings, store, sender)
    limits = build_limits(settings)
    hasher = CodeHasher(load_hash_key(settings))
    signer = JwtSigner(token_keys.signing, token_config(settings))
    credentials = build_credentials(settings)
    service = OtpService(
        used_store,
        used_sender,
        hasher,
        build_policy(settings),
        limits,
        signer,
        clock=clock,
        channels=instrument_channels(settings, channel_senders),
        fallback=settings.channel_fallback,
        journal=build_journal(settings),
    )
    return Components(
        http=http_config(settings),
        store=store,
        sender=sender,
        service=service,
        rate_limiter=RequestLimiter(
            used_store, settings.rate_limit_max_requests, settings.rate_limit_window_ms, clock
        ),
        api_auth=api_auth(settings),
        token_keys=token_keys,
        # Untimed: operators' reads are not the request path the store metrics watch.
        admin=DefenceAdmin(store, limits, clock),
        admin_auth=admin_auth(settings),
        factors=FactorService(
            credentials, store, signer, hasher, factor_policy(settings, limits), clock
        ),
        credentials=credentials,
        clock=clock,
        relay=build_relay(settings, store, clock),
        channel_senders=channel_senders,
    )


def build_credentials(settings: Settings) -> CredentialStore:
    """The credential database (DATABASE_URL), its secrets under FACTOR_ENCRYPTION_KEYS
    (or in development the key kept at FACTOR_ENCRYPTION_KEY_FILE). Nothing connects
    until the first use."""
    from otpgate.config.factor_keys import load_factor_keys
    from otpgate.credentials.cipher import SecretCipher
    from otpgate.credentials.engine import create_engine
    from otpgate.credentials.store import SqlCredentialStore

    try:
        keys = load_factor_keys(settings)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"FACTOR_ENCRYPTION_KEY_FILE: {exc}") from None
    engine = create_engine(settings.database_url, settings.database_timeout_seconds)
    return SqlCredentialStore(engine, SecretCipher(keys))


def factor_policy(settings: Settings, limits: AbusePolicy) -> FactorPolicy:
    """The factors' settings; wrong codes lock an identity out as they lock a phone."""
    return FactorPolicy(
        issuer=settings.totp_issuer,
        totp=TotpConfig(skew=settings.totp_skew_steps),
        recovery_codes=settings.recovery_code_count,
        lockout=limits.lockout,
    )


class SchemaBehind(ConfigError):
    """The credential database's schema is older than this version's."""


async def credential_schema(settings: Settings, *, migrate: bool) -> SchemaState:
    """Where the credential database's schema stands (after migrating it, with
    ``migrate``). A database that does not answer raises the driver's error."""
    from otpgate.credentials import schema
    from otpgate.credentials.engine import create_engine

    engine = create_engine(settings.database_url, settings.database_timeout_seconds)
    try:
        if migrate:
            await schema.migrate(engine)
        return await schema.schema_state(engine)
    finally:
        await engine.dispose()


def check_credentials(settings: Settings) -> None:
    """Before any worker starts: the credential database's schema is this version's, or
    (with DATABASE_MIGRATE_ON_START) is made so; SchemaBehind, naming the command that
    brings it up to date, when it is behind. A database that does not answer is an
    outage, not a configuration error: a warning, and 503s on the factor routes."""
    from sqlalchemy.exc import SQLAlchemyError

    from otpgate.credentials.engine import redacted

    try:
        state = asyncio.run(credential_schema(settings, migrate=settings.database_migrate_on_start))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning(
            "credential database %s not reachable at start-up (%s); the factor routes"
            " answer 503 until it is",
            redacted(settings.database_url),
            type(exc).__name__,
        )
        return
    if state.behind:
        at = state.current or "empty"
        raise SchemaBehind(
            f"DATABASE_URL: the credential database's schema is behind (at {at}, this"
            f" version needs {state.head}): run `otpgate migrate` (or set"
            " DATABASE_MIGRATE_ON_START=true)"
        )


def _configured_countries(settings: Settings) -> tuple[str, ...] | None:
    """ALLOWED_COUNTRIES in the order written, None for every country."""
    if settings.allowed_regions is None or settings.allowed_countries is None:
        return None
    return tuple(settings.allowed_countries.split(","))


def http_config(settings: Settings) -> HttpConfig:
    """The HTTP layer's view of the settings: the values its routes and middleware read."""
    return HttpConfig(
        otp_length=settings.otp_length,
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=tuple(settings.trusted_proxies),
        ipv6_prefix_length=settings.ipv6_prefix_length,
        widget_allowed_origins=tuple(settings.widget_allowed_origins),
        allowed_countries=_configured_countries(settings),
        access_log=settings.access_log,
        metrics_enabled=settings.metrics_enabled,
        metrics_on_api_port=settings.metrics_enabled and settings.metrics_port is None,
        fast_path=settings.fast_path,
        store_backend="redis" if settings.redis_url else "sqlite",
        admin=AdminConfig(
            port=settings.admin_port,
            send_limit=settings.phone_send_limit,
            send_window_seconds=settings.phone_send_window_seconds,
            max_attempts=settings.otp_max_attempts,
        ),
        verify_v2=verify_v2_config(settings),
    )


def verify_v2_config(settings: Settings) -> VerifyV2Config | None:
    """VERIFY_V2_*, or None while they are unset (the settings refuse only some set)."""
    sid, token = settings.verify_v2_account_sid, settings.verify_v2_auth_token
    if sid is None or token is None or not settings.verify_v2_services:
        return None
    return VerifyV2Config(sid, bytes.fromhex(token), dict(settings.verify_v2_services))


def build_relay(
    settings: Settings, events: EventLog, clock: Callable[[], float]
) -> EventRelay | None:
    if settings.event_webhook_url is None or settings.event_webhook_secret is None:
        return None
    secret = settings.event_webhook_secret.get_secret_value().encode()
    return EventRelay(events, RelayConfig(settings.event_webhook_url, secret), clock)
