"""The process: environment, listen address, workers, shutdown, fast paths."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AliasChoices, Field

from otpgate.config.section import Section

Environment = Literal["development", "production"]


class RuntimeSettings(Section):
    """The process that serves the API: which environment it runs as, where it listens,
    how many workers share the store, and how it stops. The options --host, --port and
    --workers of `otpgate serve` override the matching variables for one run."""

    SECTION_TITLE: ClassVar[str] = "Runtime"

    app_env: Environment = Field(
        "development",
        validation_alias=AliasChoices("APP_ENV", "NODE_ENV"),
        description="development or production. production turns on every fail-loud check:"
        " it refuses a missing OTP_HASH_SECRET (or its file), TOKEN_SIGNING_KEYS_FILE,"
        " ALLOWED_COUNTRIES or API_AUTH, the console SMS sender, and plain-http webhooks"
        " and widget origins."
        " Set it to production in production.",
    )
    host: str = Field(
        "127.0.0.1",
        description="Listen address of the API (an IP address or host name); 0.0.0.0 listens"
        " on every interface, as a container needs.",
    )
    port: int = Field(3000, ge=1, le=65535, description="Listen port of the API (TCP).")
    workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Worker processes, each with its own socket, all sharing the store;"
        " unset: the CPU count.",
    )
    shutdown_timeout_seconds: float | None = Field(
        None,
        gt=0,
        le=600,
        description="Seconds SIGTERM waits for requests in flight, and serves the requests"
        " that still arrive on connections already open (each answered with Connection:"
        " close, the connection closed after it); by default the worst case"
        " of one send (SMS_RETRY_MAX_SECONDS plus both SMS timeouts, times the longest"
        " CHANNEL_FALLBACK chain, or SMTP_TIMEOUT_SECONDS) plus 5 seconds. Shorter than one"
        " send's worst case is warned about at start-up.",
    )
    fast_path: bool = Field(
        True,
        description="Hand-written fast paths (server protocol, routing, access line, metric"
        " tallies, SNS Publish, Redis connection); false runs every one on its library's"
        " stock path. One whose library changed is turned off at start-up, with a warning.",
    )

    @property
    def production(self) -> bool:
        return self.app_env == "production"
