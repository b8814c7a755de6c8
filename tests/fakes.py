"""Test doubles for the SMS sender and the token signer: they record or fail, nothing else."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field


@dataclass
class CapturingSender:
    """Keeps every message, so a test can read the code a user would receive."""

    name: str = "capture"
    sent: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, phone: str, message: str) -> str:
        self.sent.append((phone, message))
        return str(uuid.uuid4())

    def last_code(self, phone: str) -> str:
        for to, message in reversed(self.sent):
            if to == phone:
                match = re.search(r"\b(\d{4,10})\b", message)
                assert match, f"no code in {message!r}"
                return match.group(1)
        raise AssertionError(f"no SMS was sent to {phone}")

    problem: str | None = None

    async def close(self) -> None:
        return None


@dataclass
class RecordingSigner:
    """A TokenSigner that keeps what it was asked to sign and returns a numbered stand-in."""

    signed: list[tuple[str, str, str | None, float]] = field(default_factory=list)
    channels: list[str | None] = field(default_factory=list)

    def sign(
        self,
        subject: str,
        token_id: str,
        purpose: str | None,
        now: float,
        channel: str | None = "sms",
    ) -> str:
        self.signed.append((subject, token_id, purpose, now))
        self.channels.append(channel)
        return f"token-{len(self.signed)}"


@dataclass
class FailingSender:
    """Raises the given error on every send, counting the calls."""

    error: Exception
    name: str = "failing"
    calls: int = 0

    async def send(self, phone: str, message: str) -> str:
        self.calls += 1
        raise self.error

    problem: str | None = None

    async def close(self) -> None:
        return None
