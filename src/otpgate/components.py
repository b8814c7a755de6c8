"""What the wiring hands the HTTP layer: the built objects, and the HTTP layer's own
configuration, taken from the settings by ``wiring.py``.

Nothing here reads the settings: the HTTP layer sees only the values below, so what it
depends on is written down in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from otpgate.config.api_keys import ApiAuth
from otpgate.delivery.event_relay import EventRelay
from otpgate.domain.admin import DefenceAdmin
from otpgate.domain.factors.ports import CredentialStore
from otpgate.domain.factors.service import FactorService
from otpgate.domain.ports import ChannelSender, OtpStore, SmsSender
from otpgate.domain.request_limit import RequestLimiter
from otpgate.domain.service import OtpService
from otpgate.tokens.keys import KeySet


@dataclass(frozen=True, slots=True)
class VerifyV2Config:
    """The Verify v2 compatible API's account, token and services (VERIFY_V2_*)."""

    account_sid: str
    token_digest: bytes = field(repr=False)
    services: Mapping[str, str]  # service sid: friendly name


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """What the operators' routes show of the limits, and where they are served."""

    port: int | None  # ADMIN_PORT: an app of their own on it; None: on the API's port
    send_limit: int  # PHONE_SEND_LIMIT
    send_window_seconds: int  # PHONE_SEND_WINDOW_SECONDS
    max_attempts: int  # OTP_MAX_ATTEMPTS


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Everything the HTTP layer reads of the configuration."""

    otp_length: int  # the verify body's code pattern, and the widget's input
    max_body_bytes: int
    trusted_proxies: tuple[str, ...]  # CIDRs whose X-Forwarded-For is believed
    ipv6_prefix_length: int
    widget_allowed_origins: tuple[str, ...]  # in a browser's origin form
    access_log: bool
    metrics_enabled: bool
    metrics_on_api_port: bool  # /metrics served by the app (no METRICS_PORT)
    fast_path: bool  # FAST_PATH, before each fast path's own start-up check
    store_backend: Literal["redis", "sqlite"]  # named by /ready
    admin: AdminConfig
    verify_v2: VerifyV2Config | None = None  # None: the Verify v2 routes are off


@dataclass(slots=True)
class Components:
    http: HttpConfig
    store: OtpStore
    sender: SmsSender
    service: OtpService
    rate_limiter: RequestLimiter
    api_auth: ApiAuth
    token_keys: KeySet  # published at /.well-known/jwks.json
    admin: DefenceAdmin  # the /admin/v1/ use cases, on the same store
    admin_auth: ApiAuth  # ADMIN_API_KEYS; no key at all while unset
    factors: FactorService  # authenticator apps and recovery codes
    credentials: CredentialStore  # DATABASE_URL, where the factors are kept
    clock: Callable[[], float] = time.time  # what the use cases read the time from
    relay: EventRelay | None = None  # delivers events while EVENT_WEBHOOK_URL is set
    # The sender of each channel besides SMS that is enabled (one webhook may serve several,
    # and SMS too).
    channel_senders: dict[str, ChannelSender] = field(default_factory=dict)

    def other_senders(self) -> list[tuple[str, ChannelSender]]:
        """Each channel sender that is not the SMS sender, once, with its first channel."""
        seen: list[object] = [self.sender]
        found = []
        for channel, sender in self.channel_senders.items():
            if not any(sender is other for other in seen):
                seen.append(sender)
                found.append((channel, sender))
        return found

    async def close(self) -> None:
        try:
            if self.relay is not None:
                await self.relay.close()
            await self.service.close()
            await self.sender.close()
            for _, sender in self.other_senders():
                await sender.close()
        finally:
            try:
                await self.credentials.close()
            finally:
                await self.store.close()
