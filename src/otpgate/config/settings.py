"""One typed settings object, read from the environment and ``.env``.

Variable names are the Node service's where it had one (PORT, HOST, AWS_*,
OTP_*, REDIS_URL, LOG_LEVEL, RATE_LIMIT_*, SNS_*), so an existing ``.env``
keeps working. Anything invalid stops start-up with the variable's name.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import phonenumbers
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from otpgate.config import delivery
from otpgate.config.api_keys import ApiAuthSetting, ApiKeyDigests, AuthMode
from otpgate.config.verify_v2 import AccountSid, AuthTokenDigest, Services
from otpgate.domain import message
from otpgate.domain.errors import InvalidPhoneNumber
from otpgate.domain.phone import parse_phone
from otpgate.store.redis.slot import PrefixError, cluster_prefix
from otpgate.store.redis.tls import RedisTls, TlsFileError
from otpgate.store.redis.url import ClusterUrl, RedisUrlError, ServerUrl, parse_redis_url

Environment = Literal["development", "production"]
LogLevel = Literal[
    "trace", "debug", "info", "warning", "warn", "error", "fatal", "critical", "silent"
]


# On top of an SMS's worst case: the store steps around it and the answer's write.
SHUTDOWN_MARGIN_SECONDS = 5.0


class ConfigError(Exception):
    """Start-up refused: the message names each offending variable."""


class Settings(BaseSettings):
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

    # --- runtime -------------------------------------------------------------------------
    app_env: Environment = Field(
        "development",
        validation_alias=AliasChoices("APP_ENV", "NODE_ENV"),
        description="production turns on every fail-loud check.",
    )
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    log_level: LogLevel = "info"
    log_format: Literal["auto", "json", "text"] = "auto"
    workers: int | None = Field(None, ge=1, le=64)
    max_body_bytes: int = Field(4096, ge=256, le=1_048_576)
    shutdown_timeout_seconds: float | None = Field(
        None,
        gt=0,
        le=600,
        description="How long SIGTERM waits for requests in flight; by default the worst case"
        " of one SMS send plus a margin.",
    )
    fast_path: bool = Field(
        True,
        description="Hand-written fast paths (server protocol, routing, logging, metrics,"
        " SNS Publish, Redis connection); false runs every one on its library's stock path.",
    )

    # --- observability -------------------------------------------------------------------
    access_log: bool = Field(True, description="One log line per request, at info level.")
    metrics_enabled: bool = Field(True, description="Count requests and outcomes for Prometheus.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve /metrics on this port instead of PORT."
    )
    metrics_host: str | None = Field(None, description="Listen address for METRICS_PORT.")

    # --- codes ---------------------------------------------------------------------------
    otp_length: int = Field(6, ge=4, le=10)
    otp_ttl_seconds: int = Field(300, ge=30, le=86_400)
    otp_max_attempts: int = Field(5, ge=1, le=20)
    verification_retention_seconds: int = Field(
        86_400,
        ge=0,
        le=90 * 86_400,
        description="How long a verification's status stays answerable after its code expires.",
    )
    otp_hash_secret: SecretStr | None = None
    otp_hash_secret_file: Path = Path(".otpgate/hash-secret")
    phone_number_check: Literal["valid", "possible"] = "valid"

    # --- tokens (a verify's signed proof; see README "Trusting a verify") ------------------
    token_issuer: str = Field("otpgate", min_length=1, description="The tokens' iss claim.")
    token_audience: str = Field(
        "otpgate", min_length=1, description="The tokens' aud claim: the backend they are for."
    )
    token_ttl_seconds: int = Field(300, ge=60, le=3600, description="How long a token is valid.")
    token_signing_keys_file: Path | None = Field(
        None,
        description="EC P-256 private keys in PEM, concatenated: the first signs, all are"
        " published. Required in production.",
    )
    token_dev_key_file: Path = Field(
        Path(".otpgate/token-signing-key.pem"),
        description="Without TOKEN_SIGNING_KEYS_FILE, in development: a key created once here.",
    )

    # --- store ---------------------------------------------------------------------------
    redis_url: str | None = Field(
        None,
        description="redis://, rediss:// (TLS), redis+sentinel://host:26379,.../master,"
        " redis+cluster://host:port,... (rediss+cluster:// for TLS) or redis+unix:///path;"
        " selects the Redis store.",
    )
    redis_tls_ca_file: Path | None = Field(
        None,
        description="With rediss:// or rediss+cluster://: CA certificates (PEM) trusted"
        " besides the system's.",
    )
    redis_tls_cert_file: Path | None = Field(
        None,
        description="With rediss:// or rediss+cluster://: a client certificate (PEM), for"
        " mutual TLS.",
    )
    redis_tls_key_file: Path | None = Field(
        None, description="The private key (PEM) of REDIS_TLS_CERT_FILE."
    )
    redis_key_prefix: str = Field(
        "otpgate:",
        description="Prefix of every key; on Redis Cluster it carries a hash tag, so every"
        " key is in one slot: otpgate: is written {otpgate}:.",
    )
    redis_timeout_seconds: float = Field(0.5, gt=0, le=30)
    sqlite_path: Path = Path(".otpgate/otpgate.sqlite3")

    # --- per-IP request limit (same semantics as the Node service) ------------------------
    rate_limit_max_requests: int = Field(5, ge=1)
    rate_limit_window_ms: int = Field(60_000, ge=1000)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("TRUSTED_PROXIES", "TRUST_PROXY"),
        description="CIDRs whose X-Forwarded-For is believed; empty trusts nobody.",
    )
    ipv6_prefix_length: int = Field(
        64,
        ge=32,
        le=128,
        description="IPv6 clients share per-IP limits by this prefix (a host often owns a /64).",
    )

    # --- who may call the API ------------------------------------------------------------
    api_keys: ApiKeyDigests = Field(
        default_factory=dict,
        description="Comma-separated name:key (32+ characters) or name:sha256:<hex> entries;"
        " only each name and the key's SHA-256 are kept.",
    )
    api_auth: ApiAuthSetting = Field(
        None,
        description="off, optional or required: whether API routes need a key (a key sent"
        " must be valid in every mode); off by default in development, required to be set"
        " in production.",
    )

    # --- the operators' API and dashboard (/admin), off while unset ----------------------
    admin_api_keys: ApiKeyDigests = Field(
        default_factory=dict,
        description="Comma-separated name:key or name:sha256:<hex> entries, as API_KEYS: the"
        " keys of /admin/v1/ and the dashboard; none of them may also be an API key.",
    )
    admin_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /admin/v1/ and /admin on this port only (a second socket of each"
        " worker) instead of PORT.",
    )
    admin_host: str | None = Field(None, description="Listen address for ADMIN_PORT.")

    # --- the Verify v2 compatible API (/v2/Services/...), off while unset -----------------
    verify_v2_account_sid: AccountSid = Field(
        None, description="AC and 32 hex digits: the account sid callers authenticate as."
    )
    verify_v2_auth_token: AuthTokenDigest = Field(
        None,
        description="The auth token (32+ visible ASCII characters) or sha256:<hex>; only"
        " its SHA-256 is kept.",
    )
    verify_v2_services: Services = Field(
        default_factory=dict,
        description="Comma-separated VA<32 hex>:Friendly name entries: the services served.",
    )

    # --- the drop-in widget (/widget) ------------------------------------------------------
    widget_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins (scheme://host[:port]) that may frame /widget and"
        " receive its token, by postMessage or a return_url; empty lets none.",
    )

    # --- abuse defence (every limit is shared by all workers on one store) -------------
    otp_resend_cooldown_seconds: int = Field(60, ge=0, le=3600)
    phone_send_limit: int = Field(5, ge=1)
    phone_send_window_seconds: int = Field(600, ge=1, le=86_400)
    ip_max_phones: int = Field(10, ge=1)
    ip_phones_window_seconds: int = Field(3600, ge=1, le=86_400)
    country_sms_per_hour: int = Field(1000, ge=1)
    country_sms_budgets: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    global_sms_per_hour: int = Field(10_000, ge=1)
    allowed_countries: str | None = Field(
        None, description="ISO codes (US,CA,GB) or * for all; required in production."
    )
    pumping_guard: bool = True
    pump_prefix_digits: int = Field(7, ge=2, le=12)
    pump_prefix_min_sends: int = Field(20, ge=1)
    pump_country_min_sends: int = Field(200, ge=1)
    pump_surge_factor: float = Field(5.0, ge=1.0)
    pump_window_seconds: int = Field(3600, ge=60, le=86_400)
    pump_block_seconds: int = Field(21_600, ge=60, le=7 * 86_400)
    conversion_guard: bool = True
    conversion_min_sends: int = Field(50, ge=1)
    conversion_country_min_sends: int = Field(200, ge=1)
    conversion_min_rate: float = Field(0.35, ge=0.0, le=1.0)
    phone_lockout_threshold: int = Field(10, ge=1, le=100)
    phone_lockout_base_seconds: int = Field(60, ge=1)
    phone_lockout_max_seconds: int = Field(86_400, ge=1)
    phone_max_consecutive_failures: int = Field(100, ge=1, le=100)
    phone_failure_memory_seconds: int = Field(30 * 86_400, ge=3600)

    # --- SMS -----------------------------------------------------------------------------
    sms_provider: Literal["sns", "console", "webhook"] | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_region: str = Field(
        "us-east-1", validation_alias=AliasChoices("AWS_DEFAULT_REGION", "AWS_REGION")
    )
    sns_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("SNS_ENDPOINT_URL", "SNS_ENDPOINT")
    )
    sns_sms_sender_id: delivery.SenderId = None
    sns_sms_type: Literal["Transactional", "Promotional"] = "Transactional"
    sms_connect_timeout_seconds: float = Field(2.0, gt=0, le=60)
    sms_read_timeout_seconds: float = Field(5.0, gt=0, le=120)

    # --- SMS delivery --------------------------------------------------------------------
    sms_message_template: delivery.MessageTemplateText = Field(
        message.DEFAULT_TEMPLATE,
        description="The English SMS text, with {code}, {app}, {minutes} and"
        " (SMS_SHOW_PURPOSE) {purpose}; when set, it wins over the templates' sms/en.txt.",
    )
    sms_show_purpose: bool = Field(
        False, description="Let the template show the request's purpose as {purpose}."
    )
    sms_app_name: delivery.AppName = message.DEFAULT_APP_NAME
    templates_dir: delivery.TemplatesDir = Field(
        None,
        description="A directory of message templates (sms/<lang>.txt, email/<lang>.html...)"
        " that replace or add to the shipped ones; read and checked at start-up.",
    )
    sms_webotp_domain: delivery.WebOtpDomain = Field(
        None, description="Adds the WebOTP line '@<domain> #<code>' so browsers autofill."
    )
    sms_android_app_hash: delivery.AndroidAppHash = Field(
        None, description="Adds the Android SMS Retriever 11-character app hash."
    )
    sms_retry_max_attempts: int = Field(3, ge=1, le=10)
    sms_retry_max_seconds: float = Field(3.0, ge=0, le=60)
    sns_check_opt_out: bool = False
    sns_origination_number: delivery.E164Number = None
    sns_max_price: delivery.MaxPrice = None
    sms_webhook_url: delivery.WebhookUrl = None
    sms_webhook_secret: delivery.WebhookSecret = None
    # Where verification and block events go, signed as the SMS webhook's requests.
    event_webhook_url: delivery.WebhookUrl = None
    event_webhook_secret: delivery.WebhookSecret = None
    test_phone_numbers: delivery.TestPhoneNumbers = Field(
        default_factory=dict,
        description="Comma-separated number=code pairs that never send an SMS.",
    )
    allow_test_numbers_in_production: bool = False

    # --- the other channels: email over SMTP, WhatsApp and voice through the webhook ------
    smtp_host: delivery.SmtpHost = Field(
        None, description="Turns the email channel on: the SMTP server codes are sent through."
    )
    smtp_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="By default 465 with SMTP_TLS, 587 with STARTTLS, else 25.",
    )
    smtp_username: delivery.OptionalText = Field(
        None, description="SMTP AUTH user, with a password."
    )
    smtp_password: delivery.OptionalSecret = None
    smtp_starttls: bool | None = Field(
        None,
        description="Upgrade the connection with STARTTLS, and fail if the server does not"
        " offer it; on unless SMTP_TLS is.",
    )
    smtp_tls: bool = Field(False, description="TLS from the first byte (usually port 465).")
    smtp_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="The most one email's whole SMTP exchange may take."
    )
    email_from: delivery.EmailFrom = Field(
        None, description="The sender of the emails: an address, or Name <address>."
    )
    email_domain_per_hour: int = Field(
        1000, ge=1, description="Codes sent to one email domain in any hour."
    )
    webhook_channels: delivery.WebhookChannels = Field(
        default_factory=list,
        description="Channels besides SMS the webhook receiver delivers (whatsapp, call).",
    )
    channel_fallback: delivery.ChannelFallback = Field(
        default_factory=dict,
        description="What a phone channel falls back to when its provider is down or"
        " broken, e.g. whatsapp>sms (comma-separated chains).",
    )

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_redis_url(value)
            except RedisUrlError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
    @classmethod
    def _check_tls_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _redis_tls_fits(self) -> Settings:
        problems = redis_tls_problems(self) + redis_cluster_problems(self)
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @property
    def redis_tls(self) -> RedisTls:
        return RedisTls(self.redis_tls_ca_file, self.redis_tls_cert_file, self.redis_tls_key_file)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_cidrs(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP address or CIDR") from None
        return value

    @field_validator("widget_allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("widget_allowed_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        origins: list[str] = []
        for origin in map(web_origin, value):
            if origin not in origins:
                origins.append(origin)
        return origins

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

    @model_validator(mode="after")
    def _sms_delivery_guards(self) -> Settings:
        problems = delivery_problems(self)
        if problems:
            raise ValueError("\n  ".join(problems))  # one line per variable, like field errors
        return self

    @property
    def sms_worst_case_seconds(self) -> float:
        """The longest one send can take: the retry budget plus one attempt's timeouts."""
        return (
            self.sms_retry_max_seconds
            + self.sms_connect_timeout_seconds
            + self.sms_read_timeout_seconds
        )

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
    def enabled_channels(self) -> list[str]:
        """SMS always; email with SMTP_HOST; WEBHOOK_CHANNELS through the webhook."""
        channels = ["sms"]
        if self.smtp_host is not None:
            channels.append("email")
        return channels + [c for c in ("whatsapp", "call") if c in self.webhook_channels]

    @property
    def effective_smtp_starttls(self) -> bool:
        return self.smtp_starttls if self.smtp_starttls is not None else not self.smtp_tls

    @property
    def effective_smtp_port(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        if self.smtp_tls:
            return 465
        return 587 if self.effective_smtp_starttls else 25

    @property
    def effective_api_auth(self) -> AuthMode:
        return self.api_auth or "off"

    @property
    def production(self) -> bool:
        return self.app_env == "production"

    @property
    def log_json(self) -> bool:
        return self.log_format == "json" or (self.log_format == "auto" and self.production)

    @property
    def events_on(self) -> bool:
        """Whether the store queues events (a webhook will deliver them)."""
        return self.event_webhook_url is not None

    @property
    def effective_sms_provider(self) -> Literal["sns", "console", "webhook"]:
        """Console only when asked for, or in development when nothing was chosen."""
        if self.sms_provider is not None:
            return self.sms_provider
        return "sns" if self.production else "console"

    @model_validator(mode="after")
    def _lockout_order(self) -> Settings:
        if self.phone_lockout_threshold > self.phone_max_consecutive_failures:
            raise ValueError(
                "PHONE_LOCKOUT_THRESHOLD: must not exceed PHONE_MAX_CONSECUTIVE_FAILURES"
            )
        return self

    @model_validator(mode="after")
    def _production_guards(self) -> Settings:
        if not self.production:
            return self
        problems = []
        if self.allowed_countries is None:
            problems.append(
                "ALLOWED_COUNTRIES: required when APP_ENV=production"
                " (ISO codes such as US,CA, or * to allow every country)"
            )
        if self.sms_provider == "console":
            problems.append(
                "SMS_PROVIDER: 'console' prints codes and is refused when APP_ENV=production"
            )
        if self.api_auth is None:
            problems.append(
                "API_AUTH: required when APP_ENV=production (off, optional or required;"
                " required needs API_KEYS)"
            )
        if self.otp_hash_secret is None:
            problems.append("OTP_HASH_SECRET: required when APP_ENV=production (32+ random bytes)")
        elif len(self.otp_hash_secret.get_secret_value()) < 32:
            problems.append("OTP_HASH_SECRET: must be at least 32 characters")
        if self.token_signing_keys_file is None:
            problems.append(
                "TOKEN_SIGNING_KEYS_FILE: required when APP_ENV=production"
                " (EC P-256 private keys in PEM; the first signs)"
            )
        plain = [o for o in self.widget_allowed_origins if not delivery.https_or_loopback(o)]
        if plain:
            problems.append(
                "WIDGET_ALLOWED_ORIGINS: must be https:// (or a loopback address) when"
                f" APP_ENV=production, not {', '.join(plain)}; the widget hands them a token"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _keys_for_required_auth(self) -> Settings:
        if self.api_auth == "required" and not self.api_keys:
            raise ValueError(
                "API_AUTH: 'required' needs at least one key in API_KEYS (name:key entries)"
            )
        return self

    @model_validator(mode="after")
    def _verify_v2_all_or_none(self) -> Settings:
        given = {
            "VERIFY_V2_ACCOUNT_SID": self.verify_v2_account_sid is not None,
            "VERIFY_V2_AUTH_TOKEN": self.verify_v2_auth_token is not None,
            "VERIFY_V2_SERVICES": bool(self.verify_v2_services),
        }
        if any(given.values()) and not all(given.values()):
            missing = [name for name, isset in given.items() if not isset]
            raise ValueError(
                "; ".join(
                    f"{name}: required when any VERIFY_V2_* variable is set"
                    " (the Verify v2 API needs the account sid, the token and a service)"
                    for name in missing
                )
            )
        return self

    @property
    def english_sms_template(self) -> str | None:
        """SMS_MESSAGE_TEMPLATE when it was set, else None: the templates' English SMS
        (shipped as the same default text, or TEMPLATES_DIR's) is the one sent."""
        if "sms_message_template" in self.model_fields_set:
            return self.sms_message_template
        return None

    @property
    def verify_v2_enabled(self) -> bool:
        return self.verify_v2_account_sid is not None

    @model_validator(mode="after")
    def _purpose_shown_only_when_asked(self) -> Settings:
        if "{purpose}" in self.sms_message_template and not self.sms_show_purpose:
            raise ValueError(
                "SMS_MESSAGE_TEMPLATE: uses {purpose}, which is shown only with"
                " SMS_SHOW_PURPOSE=true (a purpose may be an internal id)"
            )
        return self

    @model_validator(mode="after")
    def _metrics_port_apart(self) -> Settings:
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError(
                "METRICS_PORT: must differ from PORT (unset it to serve /metrics on PORT)"
            )
        return self

    @model_validator(mode="after")
    def _admin_keys_of_their_own(self) -> Settings:
        """An admin key that also calls the API would be held by every backend (and
        sometimes a browser) that calls it: each admin key must be a key of its own."""
        others = {digest: "API_KEYS" for digest in self.api_keys.values()}
        if self.verify_v2_auth_token is not None:
            others[self.verify_v2_auth_token] = "VERIFY_V2_AUTH_TOKEN"
        problems = [
            f"ADMIN_API_KEYS: entry {index} ({name}) is also a key in {others[digest]};"
            " an admin key must be a key of its own"
            for index, (name, digest) in enumerate(self.admin_api_keys.items(), start=1)
            if digest in others
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _admin_port_apart(self) -> Settings:
        if self.admin_port is None:
            return self
        if not self.admin_api_keys:
            raise ValueError(
                "ADMIN_PORT: set without ADMIN_API_KEYS; the admin routes are off until"
                " ADMIN_API_KEYS names a key, so the port would serve nothing"
            )
        for name, port in (("PORT", self.port), ("METRICS_PORT", self.metrics_port)):
            if self.admin_port == port:
                raise ValueError(f"ADMIN_PORT: must differ from {name}")
        return self


def redis_tls_problems(settings: Settings) -> list[str]:
    """REDIS_TLS_* against REDIS_URL and each other, and the files loaded as TLS would."""
    given = {
        "REDIS_TLS_CA_FILE": settings.redis_tls_ca_file,
        "REDIS_TLS_CERT_FILE": settings.redis_tls_cert_file,
        "REDIS_TLS_KEY_FILE": settings.redis_tls_key_file,
    }
    names = [name for name, path in given.items() if path is not None]
    if not names:
        return []
    url = parse_redis_url(settings.redis_url) if settings.redis_url else None
    if not (isinstance(url, ServerUrl | ClusterUrl) and url.tls):
        return [
            f"{name}: set, but REDIS_URL {'is unset' if url is None else 'does not use TLS'};"
            " TLS needs a rediss:// or rediss+cluster:// URL"
            for name in names
        ]
    if settings.redis_tls_cert_file is not None and settings.redis_tls_key_file is None:
        return ["REDIS_TLS_KEY_FILE: required with REDIS_TLS_CERT_FILE (the certificate's key)"]
    if settings.redis_tls_key_file is not None and settings.redis_tls_cert_file is None:
        return ["REDIS_TLS_CERT_FILE: required with REDIS_TLS_KEY_FILE (the key's certificate)"]
    try:
        settings.redis_tls.context()
    except TlsFileError as exc:
        if exc.which == "ca":
            return [f"REDIS_TLS_CA_FILE: {exc}"]
        return [f"REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE: {exc}"]
    return []


def redis_cluster_problems(settings: Settings) -> list[str]:
    """REDIS_KEY_PREFIX against a redis+cluster:// REDIS_URL: its keys must share one slot."""
    if not settings.redis_url:
        return []
    try:
        url = parse_redis_url(settings.redis_url)
    except RedisUrlError:
        return []  # REDIS_URL's own check says why
    if not isinstance(url, ClusterUrl):
        return []
    try:
        cluster_prefix(settings.redis_key_prefix)
    except PrefixError as exc:
        return [f"REDIS_KEY_PREFIX: {exc}"]
    return []


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
    if plain and settings.production and not delivery.is_loopback(settings.smtp_host):
        problems.append(
            "SMTP_STARTTLS: refused as false when APP_ENV=production, unless SMTP_TLS is set"
            " or SMTP_HOST is a loopback address; the emails carry the codes"
        )
    return problems


_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"[a-z0-9._-]+")  # urlsplit's hostname is lowercase already


def web_origin(text: str) -> str:
    """``text`` as a browser writes an origin (``URL.origin``): lowercase scheme and host,
    no default port, no trailing slash; ValueError unless it is exactly one http(s) origin."""
    shape = "must be an origin, scheme://host[:port] with http or https"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} {shape}") from None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        raise ValueError(f"{text!r} {shape}")
    if not host.isascii():
        raise ValueError(f"{text!r} {shape}, an international name in its xn-- form")
    if not (_HOST.fullmatch(host) or ":" in host):
        raise ValueError(f"{text!r} {shape}; the host has characters no host name has")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{text!r} {shape}, without user or password")
    if parts.path or parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"{text!r} {shape}, without a path, not even a trailing /")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}")


def _check_region(region: str) -> None:
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{region!r} is not an ISO 3166 country code")


def load_settings(**overrides: object) -> Settings:
    """Build settings or raise ConfigError with one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        name = loc[0].upper() if loc else ""
        msg = err["msg"].removeprefix("Value error, ")
        # Never echo the offending input: it may be a secret.
        lines.append(f"{name}: {msg}" if name else msg)
    return "invalid configuration:\n  " + "\n  ".join(lines)
