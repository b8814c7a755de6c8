"""The store interface every backend implements, and the values it trades in.

Each method is one atomic step on the backend (a Lua script on Redis, one
transaction on SQLite), so a limit holds across every worker and instance that
shares the store, and a request pays for one round trip per step.

The store knows counters, sets and clocks, not policy: the domain decides which
limits apply to a request (``otpgate.domain.limits``) and hands them over here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Quota:
    """A sliding-window counter checked and charged together with a send.

    ``kind`` is the machine code reported when it refuses; ``key`` scopes it
    (a phone, a country, ``*`` for global).
    """

    kind: str
    key: str
    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class DistinctQuota:
    """At most ``limit`` distinct members per fixed window, e.g. phones per IP."""

    kind: str
    key: str
    member: str
    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class SurgeGuard:
    """Blocks ``key`` for ``block_seconds`` when its sends surge past a baseline.

    The rule: a send is refused, and the key blocked, when the sends in the
    current fixed window would exceed ``max(min_sends, factor * previous window)``.
    The previous window is the baseline, so steady growth passes and a burst
    against a quiet prefix trips it.
    """

    kind: str
    key: str
    min_sends: int
    factor: float
    window_seconds: int
    block_seconds: int

    def allowed(self, previous: int) -> float:
        return max(self.min_sends, self.factor * previous)


@dataclass(frozen=True, slots=True)
class RequestWindow:
    """A client's request limit (per IP and route), counted in the same step as the
    operation it guards, so limiting costs no extra round trip."""

    key: str
    limit: int
    window_ms: int


@dataclass(frozen=True, slots=True)
class WindowHit:
    """One hit on a fixed-window counter: the count so far and when it resets."""

    count: int
    reset_after_ms: int

    def over(self, window: RequestWindow) -> bool:
        return self.count > window.limit

    @property
    def reset_seconds(self) -> int:
        """Whole seconds until the window resets (at least 1): Retry-After's value."""
        return max(1, math.ceil(self.reset_after_ms / 1000))


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Everything the issue step needs to decide and record a send atomically."""

    phone: str
    code_hash: bytes
    ttl_seconds: int
    cooldown_seconds: int
    quotas: Sequence[Quota] = ()
    distinct: Sequence[DistinctQuota] = ()
    surges: Sequence[SurgeGuard] = ()

    def counters(self) -> list[tuple[str, str, int]]:
        """(kind, scope, window) of every counter a send charges: quotas and surges."""
        out = [(q.kind, q.key, q.window_seconds) for q in self.quotas]
        out += [(g.kind, g.key, g.window_seconds) for g in self.surges]
        return out


@dataclass(frozen=True, slots=True)
class Issued:
    """A stored code; keep it to undo the send if delivery fails.

    ``new_members`` flags, per distinct quota, whether this send added its member.
    """

    request: SendRequest
    now: float
    new_members: tuple[bool, ...] = ()
    window_hit: WindowHit | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """Nothing was stored or charged; ``kind`` names the limit that refused."""

    kind: str
    retry_after: int
    window_hit: WindowHit | None = None


@dataclass(frozen=True, slots=True)
class Lockout:
    """Escalating lock on a phone after consecutive failed verifies, across codes.

    From ``threshold`` failures on, each further attempt waits
    ``min(base * 2**(n - threshold), max)`` seconds after the last failure; at
    ``hard_cap`` failures the phone stays locked until the failure record lapses,
    ``memory_seconds`` after the last failure. A success clears the record.
    """

    kind: str = "phone_locked"
    threshold: int = 10
    base_seconds: int = 60
    max_seconds: int = 86_400
    hard_cap: int = 100
    memory_seconds: int = 30 * 86_400

    def wait_seconds(self, failures: int) -> float:
        if failures >= self.hard_cap:
            return float(self.memory_seconds)
        if failures < self.threshold:
            return 0.0
        return float(min(self.base_seconds * 2 ** (failures - self.threshold), self.max_seconds))


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of counting one verify attempt for a phone.

    ``attempts`` already includes this one; ``code_hash`` is None when no live
    code exists (never requested, expired or consumed). ``locked_for`` > 0 means
    the lockout refused the attempt and nothing was counted.
    """

    attempts: int
    code_hash: bytes | None
    locked_for: int = field(default=0)
    window_hit: WindowHit | None = None


class OtpStore(Protocol):
    async def issue(
        self, request: SendRequest, now: float, window: RequestWindow | None = None
    ) -> Issued | Refused:
        """Check every limit; if all pass, replace the phone's code and charge them.

        ``window`` is always counted first; over it, the answer is ``Refused``
        of kind ``rate_limited`` and nothing else happens. Then checks run in a
        fixed order (surge blocks, cooldown, quotas, distinct quotas, surge
        rules) and the first refusal wins; a refusal charges nothing.
        """

    async def undo_issue(self, issued: Issued) -> None:
        """Remove the code and refund every charge, if the code is still the current one."""

    async def begin_verify(
        self,
        phone: str,
        ttl_seconds: int,
        now: float,
        lockout: Lockout,
        window: RequestWindow | None = None,
    ) -> Attempt:
        """Count one attempt and one failure *before* any comparison; return the hash.

        ``window`` is counted first; over it, nothing else is counted and the
        attempt comes back with ``attempts == 0`` and an over-limit ``window_hit``.
        """

    async def consume(self, phone: str, code_hash: bytes, now: float) -> bool:
        """Delete the code if it is still ``code_hash`` and live, and clear the failures.

        True for exactly one caller.
        """

    async def hit_window(self, window: RequestWindow, now: float) -> WindowHit:
        """Count one hit on ``window`` alone, for requests that never reach an operation."""

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
    """When one more send fits under ``limit`` again, in whole seconds (at least 1)."""
    into = now % window_seconds
    room = limit - 1 - current  # sends that fit on top of the current window's own count
    if room >= 0:
        if previous == 0:
            return 1
        # previous * (1 - t/w) <= room  =>  t >= w * (1 - room / previous)
        return max(1, math.ceil(window_seconds * (1.0 - room / previous) - into))
    # The current window alone is over: wait until it becomes a light enough baseline.
    into_next = window_seconds * (1.0 - (limit - 1) / current)
    return max(1, math.ceil(window_seconds - into + into_next))


def seconds_until_window_ends(now: float, window_seconds: int) -> int:
    return max(1, math.ceil(window_seconds - now % window_seconds))
