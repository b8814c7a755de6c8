"""Development sender: writes the SMS to the terminal instead of a phone.

It exists so ``otpgate serve`` works on a laptop with no provider account. The
settings refuse it in production, since it would print codes to a log.
"""

from __future__ import annotations

import sys
import uuid
from typing import TextIO


class ConsoleSender:
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, phone: str, message: str) -> str:
        message_id = str(uuid.uuid4())
        stream = self._stream or sys.stderr
        stream.write(f"[console SMS to {phone}] {message}\n")
        stream.flush()
        return message_id

    @property
    def problem(self) -> str | None:
        return None

    async def close(self) -> None:
        return None
