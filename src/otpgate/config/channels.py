"""The channels besides SMS: email over SMTP, WhatsApp and calls through the webhook,
and the fallback from one phone channel to another."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from otpgate.config import delivery
from otpgate.config.section import Section


class ChannelSettings(Section):
    """SMS is always on. Email is on with SMTP_HOST; WhatsApp and voice calls go to the SMS
    webhook (SMS_WEBHOOK_URL and SMS_WEBHOOK_SECRET) with "channel" in its payload; a
    phone channel whose provider is down may fall back to another."""

    SECTION_TITLE: ClassVar[str] = "Email and other channels"

    smtp_host: delivery.SmtpHost = Field(
        None,
        description="Turns the email channel on: the SMTP server (a host name or IP address,"
        " no scheme or port) codes are sent through; needs EMAIL_FROM.",
    )
    smtp_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="The SMTP server's TCP port; unset: 465 with SMTP_TLS, 587 with"
        " STARTTLS, else 25.",
    )
    smtp_username: delivery.OptionalText = Field(
        None, description="SMTP AUTH user, with SMTP_PASSWORD; both or neither."
    )
    smtp_password: delivery.OptionalSecret = Field(
        None, description="SMTP AUTH password, with SMTP_USERNAME."
    )
    smtp_starttls: bool | None = Field(
        None,
        description="Upgrade the connection with STARTTLS, and fail if the server does not"
        " offer it; unset: on unless SMTP_TLS is. Production refuses plain SMTP except to a"
        " loopback address.",
    )
    smtp_tls: bool = Field(
        False,
        description="TLS from the first byte (usually port 465); not with SMTP_STARTTLS=true.",
    )
    smtp_tls_ca_file: Path | None = Field(
        None,
        description="With SMTP_STARTTLS or SMTP_TLS: CA certificates (PEM) trusted besides"
        " the system's, for a server whose certificate a private CA issued; read at"
        " start-up.",
    )
    smtp_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="Seconds one email's whole SMTP exchange may take."
    )
    email_from: delivery.EmailFrom = Field(
        None,
        description="Required with SMTP_HOST: the emails' sender, an ASCII address or"
        " Name <address> (e.g. Acme <no-reply@example.com>).",
    )
    webhook_channels: delivery.WebhookChannels = Field(
        default_factory=list,
        description="Comma-separated channels besides SMS the webhook receiver delivers"
        " (whatsapp, call); they need SMS_WEBHOOK_URL and SMS_WEBHOOK_SECRET, whatever"
        " SMS_PROVIDER is.",
    )
    channel_fallback: delivery.ChannelFallback = Field(
        default_factory=dict,
        description="What a phone channel falls back to when its provider is down or"
        " broken: comma-separated chains of enabled channels, e.g. whatsapp>sms.",
    )

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
