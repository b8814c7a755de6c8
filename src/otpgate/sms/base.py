"""The sender interface.

A sender raises ``SmsRejected`` (the number is the problem), ``SmsOptedOut``
(the subscriber said STOP), ``SmsUnavailable`` (try again later) or ``SmsFailed``
(our side is broken); anything else it lets escape is a bug. It logs the cause
of a failure itself, never the message text (it carries the code).
"""

from __future__ import annotations

from typing import Protocol


class SmsSender(Protocol):
    name: str

    @property
    def problem(self) -> str | None:
        """Why the provider is known to be broken (bad credentials...), or None.

        Readiness reports it; it never contains a secret.
        """

    async def send(self, phone: str, message: str) -> str:
        """Deliver ``message`` to ``phone`` (E.164) and return the provider's message id."""

    async def close(self) -> None: ...
