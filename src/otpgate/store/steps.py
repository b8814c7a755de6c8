"""The store's methods, each one step of the store rules on a backend's state.

``MemoryStore`` and ``SqliteStore`` differ only in where the state lives and how a
step is made atomic (``_step``); what each method does is ``otpgate.store.rules``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from otpgate.domain import ports
from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.limits import Lockout, Quota
from otpgate.store import rules
from otpgate.store.state import State

P = ParamSpec("P")
T = TypeVar("T")


class RuleSteps(ABC):
    """``OtpStore``, ``DefenceStore`` and ``EventLog`` over the store rules."""

    @abstractmethod
    async def _step(
        self, fn: Callable[Concatenate[State, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn`` on the state as one atomic step."""

    # -- OtpStore ----------------------------------------------------------------------
    async def issue(
        self, request: ports.SendRequest, now: float, window: ports.RequestWindow | None = None
    ) -> ports.Issued | ports.Refused:
        outcome = await self._step(rules.issue, request, now, window)
        if outcome is None:  # voided before it ran
            raise StoreUnavailable()
        return outcome

    async def void_issue(self, request: ports.SendRequest, now: float) -> None:
        await self._step(rules.void_issue, request, now)

    async def begin_verify(
        self,
        phone: str,
        ttl_seconds: int,
        now: float,
        lockout: Lockout,
        window: ports.RequestWindow | None = None,
    ) -> ports.Attempt:
        return await self._step(rules.begin_verify, phone, ttl_seconds, now, lockout, window)

    async def consume(
        self,
        phone: str,
        code_hash: bytes,
        now: float,
        verification_id: str = "",
        ranges: Sequence[str] = (),
    ) -> bool:
        return await self._step(rules.consume, phone, code_hash, now, verification_id, ranges)

    async def get_verification(self, verification_id: str, now: float) -> ports.Verification | None:
        return await self._step(rules.get_verification, verification_id, now)

    async def finish_verification(
        self, verification_id: str, status: ports.VerificationStatus, now: float
    ) -> ports.Verification | None:
        return await self._step(rules.finish_verification, verification_id, status, now)

    async def set_channel(self, verification_id: str, channel: str) -> None:
        await self._step(rules.set_channel, verification_id, channel)

    async def hit_window(self, window: ports.RequestWindow, now: float) -> ports.WindowHit:
        return await self._step(rules.hit_window, window, now)

    # -- what operators see and undo (DefenceStore) ------------------------------------
    async def blocks(self, now: float) -> list[ports.Block]:
        return await self._step(rules.blocks, now)

    async def lift_block(self, kind: str, scope: str, now: float) -> ports.Block | None:
        return await self._step(rules.lift_block, kind, scope, now)

    async def phone_state(self, phone: str, now: float, sends: Quota) -> ports.PhoneState:
        return await self._step(rules.phone_state, phone, now, sends)

    async def set_override(self, which: ports.OverrideList, entry: str, present: bool) -> bool:
        return await self._step(rules.set_override, which, entry, present)

    async def overrides(self) -> dict[ports.OverrideList, list[str]]:
        return await self._step(rules.overrides)

    async def range_stats(self, now: float) -> list[ports.RangeStats]:
        return await self._step(rules.range_stats, now)

    # -- events (EventLog) -------------------------------------------------------------
    async def append_event(self, type: str, data: dict[str, Any], now: float) -> None:
        await self._step(rules.emit, type, data, now)

    async def next_events(
        self, owner: str, now: float, lease_seconds: float, limit: int
    ) -> list[ports.Event] | None:
        return await self._step(rules.next_events, owner, now, lease_seconds, limit)

    async def ack_event(self, owner: str, event_id: str) -> None:
        await self._step(rules.ack_event, owner, event_id)

    async def sweep_expired(self, now: float, limit: int) -> int:
        return await self._step(rules.sweep_expired, now, limit)
