"""One typed settings object, read from the environment and ``.env``.

Variable names are the Node service's where it had one (PORT, HOST, AWS_*,
OTP_*, REDIS_URL, LOG_LEVEL, RATE_LIMIT_*, SNS_*), so an existing ``.env``
keeps working. Anything invalid stops start-up with the variable's name.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "production"]
LogLevel = Literal[
    "trace", "debug", "info", "warning", "warn", "error", "fatal", "critical", "silent"
]


class ConfigError(Exception):
    """Start-up refused: the message names each offending variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
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
    shutdown_timeout_seconds: float = Field(10.0, gt=0, le=300)

    # --- codes ---------------------------------------------------------------------------
    otp_length: int = Field(6, ge=4, le=10)
    otp_ttl_seconds: int = Field(300, ge=30, le=86_400)
    otp_max_attempts: int = Field(5, ge=1, le=20)
    otp_hash_secret: SecretStr | None = None
    otp_hash_secret_file: Path = Path(".otpgate/hash-secret")
    phone_number_check: Literal["valid", "possible"] = "valid"
    otp_resend_cooldown_seconds: int = Field(60, ge=0, le=3600)
    phone_send_limit: int = Field(5, ge=1)
    phone_send_window_seconds: int = Field(600, ge=1, le=86_400)

    # --- store ---------------------------------------------------------------------------
    redis_url: str | None = None
    redis_key_prefix: str = "otpgate:"
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

    # --- SMS -----------------------------------------------------------------------------
    sms_provider: Literal["sns", "console"] | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_region: str = Field(
        "us-east-1", validation_alias=AliasChoices("AWS_DEFAULT_REGION", "AWS_REGION")
    )
    sns_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("SNS_ENDPOINT_URL", "SNS_ENDPOINT")
    )
    sns_sms_sender_id: str | None = Field(None, pattern=r"^[A-Za-z0-9]{1,11}$")
    sns_sms_type: Literal["Transactional", "Promotional"] = "Transactional"
    sms_connect_timeout_seconds: float = Field(2.0, gt=0, le=60)
    sms_read_timeout_seconds: float = Field(5.0, gt=0, le=120)

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

    @property
    def production(self) -> bool:
        return self.app_env == "production"

    @property
    def log_json(self) -> bool:
        return self.log_format == "json" or (self.log_format == "auto" and self.production)

    @property
    def effective_sms_provider(self) -> Literal["sns", "console"]:
        """Console only when asked for, or in development when nothing was chosen."""
        if self.sms_provider is not None:
            return self.sms_provider
        return "sns" if self.production else "console"

    @model_validator(mode="after")
    def _production_guards(self) -> Settings:
        if not self.production:
            return self
        problems = []
        if self.sms_provider == "console":
            problems.append(
                "SMS_PROVIDER: 'console' prints codes and is refused when APP_ENV=production"
            )
        if self.otp_hash_secret is None:
            problems.append("OTP_HASH_SECRET: required when APP_ENV=production (32+ random bytes)")
        elif len(self.otp_hash_secret.get_secret_value()) < 32:
            problems.append("OTP_HASH_SECRET: must be at least 32 characters")
        if problems:
            raise ValueError("; ".join(problems))
        return self


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
