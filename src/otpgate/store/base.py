"""The store interface every backend implements, and the values it trades in.

Each method is one atomic step on the backend (a Lua script on Redis, one
transaction on SQLite), so a limit holds across every worker and instance that
shares the store, and a request pays for one round trip per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Quota:
    """A sliding-window counter checked and charged together with a send.

    ``kind`` is the machine code reported when it refuses; ``key`` scopes it
    (a phone, an IP, a country, ``*`` for global).
    """

    kind: str
    key: str
    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Everything the issue step needs to decide and record a send atomically."""

    phone: str
    code_hash: bytes
    ttl_seconds: int
    cooldown_seconds: int
    quotas: Sequence[Quota] = ()


@dataclass(frozen=True, slots=True)
class Issued:
    """A stored code; keep it to undo the send if delivery fails."""

    request: SendRequest
    now: float


@dataclass(frozen=True, slots=True)
class Refused:
    """Nothing was stored or charged; ``kind`` names the limit that refused."""

    kind: str
    retry_after: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of counting one verify attempt for a phone.

    ``attempts`` already includes this one; ``code_hash`` is None when no live
    code exists (never requested, expired or consumed).
    """

    attempts: int
    code_hash: bytes | None


@dataclass(frozen=True, slots=True)
class WindowHit:
    """One hit on a fixed-window counter: the count so far and when it resets."""

    count: int
    reset_after_ms: int


class OtpStore(Protocol):
    async def issue(self, request: SendRequest, now: float) -> Issued | Refused:
        """Check cooldown and quotas; if all pass, replace the phone's code and charge them."""

    async def undo_issue(self, issued: Issued) -> None:
        """Remove the code and refund cooldown and quotas, if the code is still the current one."""

    async def begin_verify(self, phone: str, ttl_seconds: int, now: float) -> Attempt:
        """Count one attempt *before* any comparison, and return the stored hash."""

    async def consume(self, phone: str, code_hash: bytes, now: float) -> bool:
        """Delete the code if it is still ``code_hash`` and live; True for exactly one caller."""

    async def hit_window(self, key: str, window_ms: int, now: float) -> WindowHit:
        """Count one hit on the fixed window ``key`` (created on first hit)."""

    async def ping(self) -> None:
        """Raise StoreUnavailable when the backend does not answer."""

    async def close(self) -> None: ...


def window_index(now: float, window_seconds: int) -> int:
    return int(now // window_seconds)


def sliding_count(previous: int, current: int, now: float, window_seconds: int) -> float:
    """Sliding-window-counter estimate: the previous window weighted by its overlap."""
    elapsed = (now % window_seconds) / window_seconds
    return previous * (1.0 - elapsed) + current


def seconds_until_allowed(
    previous: int, current: int, limit: int, now: float, window_seconds: int
) -> int:
    """When the estimate drops below ``limit`` again, in whole seconds (at least 1)."""
    into = now % window_seconds
    if current >= limit or previous == 0:
        return max(1, int(window_seconds - into) + 1)
    # previous * (1 - t/w) + current < limit  =>  t > w * (1 - (limit - current) / previous)
    t_needed = window_seconds * (1.0 - (limit - current) / previous)
    return max(1, int(t_needed - into) + 1)
