"""What an operator can see and undo of the defences: the admin use cases.

Every instance answers the same, since all of it lives in the shared store
(``ports.DefenceStore``). Nothing here shows a code or a hash: a phone's state says
whether a code is pending, never which.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from otpgate.domain.errors import OtpError
from otpgate.domain.limits import AbusePolicy
from otpgate.domain.phone import parse_phone
from otpgate.domain.ports import (
    Block,
    DefenceStore,
    EventLog,
    OverrideList,
    PhoneState,
    RangeStats,
)

# An override names a range: ``prefix:<1 to 15 digits>`` (of the E.164 number, without
# the +) or ``country:<ISO region>`` (``country:+<calling code>`` outside any region).
_ENTRY = re.compile(r"^(prefix:[0-9]{1,15}|country:([A-Z]{2}|\+[0-9]{1,3}))$")
_KINDS = frozenset({"prefix_blocked", "country_blocked", "phone_locked"})


class BlockNotFound(OtpError):
    code = "block_not_found"
    message = "No such block is in force."


class InvalidOverride(OtpError):
    code = "invalid_override"
    message = "An override is prefix:<digits> or country:<ISO code>."


@dataclass(frozen=True, slots=True)
class PhoneReport:
    state: PhoneState
    locked_until: float | None  # the lockout's end, when the phone is locked now


def is_override_entry(entry: str) -> bool:
    return _ENTRY.match(entry) is not None


class AdminStore(DefenceStore, EventLog, Protocol):
    """The defences' state and the event queue: operators' actions are events too."""


class DefenceAdmin:
    def __init__(
        self,
        store: AdminStore,
        limits: AbusePolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._limits = limits
        self._clock = clock

    async def blocks(self) -> list[Block]:
        return await self._store.blocks(self._clock())

    async def lift(self, kind: str, scope: str, by: str = "") -> Block:
        """End a block now; the next send to the range (or verify of the phone) passes
        that defence (a range stays in grace until the block would have ended). ``by``
        names who did it, for the events."""
        if kind not in _KINDS:
            raise BlockNotFound()
        now = self._clock()
        lifted = await self._store.lift_block(kind, scope, now)
        if lifted is None:
            raise BlockNotFound()
        data = {"kind": kind, "scope": scope, "reason": lifted.reason, "by": by}
        await self._store.append_event("block.lifted", data, now)
        await self._action("lift_block", {"kind": kind, "scope": scope}, by, now)
        return lifted

    async def _action(self, action: str, target: dict[str, str], by: str, now: float) -> None:
        await self._store.append_event("admin.action", {"action": action, **target, "by": by}, now)

    async def phone(self, raw_phone: str) -> PhoneReport:
        phone = parse_phone(raw_phone, "possible")
        now = self._clock()
        sends = self._limits.send_quotas(phone)[0]  # the per-phone limit
        state = await self._store.phone_state(phone.e164, now, sends)
        locked_until = None
        if state.last_failure_at is not None:
            ends = state.last_failure_at + self._limits.lockout.wait_seconds(state.failures)
            locked_until = ends if ends > now else None
        return PhoneReport(state, locked_until)

    async def overrides(self) -> dict[OverrideList, list[str]]:
        return await self._store.overrides()

    async def set_override(
        self, which: OverrideList, entry: str, present: bool, by: str = ""
    ) -> bool:
        if not is_override_entry(entry):
            raise InvalidOverride()
        changed = await self._store.set_override(which, entry, present)
        if changed:
            action = "override_add" if present else "override_remove"
            await self._action(action, {"list": which, "entry": entry}, by, self._clock())
        return changed

    async def stats(self) -> list[RangeStats]:
        return await self._store.range_stats(self._clock())
