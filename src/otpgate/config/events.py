"""Where the service's events go."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from otpgate.config import delivery
from otpgate.config.section import Section


class EventSettings(Section):
    """Events (verification.approved, block.created...) are queued in the store and
    POSTed to a webhook, signed as the SMS webhook's requests are; off while unset."""

    SECTION_TITLE: ClassVar[str] = "Events"

    event_webhook_url: delivery.WebhookUrl = Field(
        None,
        description="Where events are POSTed, with EVENT_WEBHOOK_SECRET (both or neither);"
        " https (or a loopback address) in production.",
    )
    event_webhook_secret: delivery.WebhookSecret = Field(
        None,
        description="The HMAC-SHA256 key of the events' X-Otpgate-Signature header, 32+"
        " characters.",
    )

    @property
    def events_on(self) -> bool:
        """Whether the store queues events (a webhook will deliver them)."""
        return self.event_webhook_url is not None
