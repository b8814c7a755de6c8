"""Builds the object graph from settings: the one place that picks implementations."""

from __future__ import annotations

from dataclasses import dataclass

from otpgate.domain.codes import CodeHasher
from otpgate.domain.policy import OtpPolicy
from otpgate.domain.service import OtpService
from otpgate.hash_key import load_hash_key
from otpgate.http.client_ip import ClientIpResolver
from otpgate.http.rate_limit import RouteRateLimiter
from otpgate.settings import Settings
from otpgate.sms.base import SmsSender
from otpgate.store.base import OtpStore


@dataclass(slots=True)
class Components:
    settings: Settings
    store: OtpStore
    sender: SmsSender
    service: OtpService
    rate_limiter: RouteRateLimiter
    client_ip: ClientIpResolver

    async def close(self) -> None:
        try:
            await self.sender.close()
        finally:
            await self.store.close()


def build_store(settings: Settings) -> OtpStore:
    if settings.redis_url:
        from otpgate.store.redis import RedisStore

        return RedisStore(
            settings.redis_url,
            prefix=settings.redis_key_prefix,
            timeout=settings.redis_timeout_seconds,
        )
    from otpgate.store.sqlite import SqliteStore

    return SqliteStore(settings.sqlite_path)


def build_sender(settings: Settings) -> SmsSender:
    if settings.effective_sms_provider == "console":
        from otpgate.sms.console import ConsoleSender

        return ConsoleSender()
    from otpgate.sms.sns import SnsSender

    return SnsSender.from_settings(settings)


def build_policy(settings: Settings) -> OtpPolicy:
    return OtpPolicy(
        length=settings.otp_length,
        ttl_seconds=settings.otp_ttl_seconds,
        max_attempts=settings.otp_max_attempts,
        resend_cooldown_seconds=settings.otp_resend_cooldown_seconds,
        phone_sends_per_window=settings.phone_send_limit,
        phone_send_window_seconds=settings.phone_send_window_seconds,
        phone_check=settings.phone_number_check,
    )


def build_components(
    settings: Settings, *, store: OtpStore | None = None, sender: SmsSender | None = None
) -> Components:
    store = store or build_store(settings)
    sender = sender or build_sender(settings)
    service = OtpService(store, sender, CodeHasher(load_hash_key(settings)), build_policy(settings))
    return Components(
        settings=settings,
        store=store,
        sender=sender,
        service=service,
        rate_limiter=RouteRateLimiter(
            store, settings.rate_limit_max_requests, settings.rate_limit_window_ms
        ),
        client_ip=ClientIpResolver(settings.trusted_proxies),
    )
