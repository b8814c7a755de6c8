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

from otpgate.domain.errors import OtpError
from otpgate.domain.limits import AbusePolicy
from otpgate.domain.phone import parse_phone
from otpgate.domain.ports import Block, DefenceStore, OverrideList, PhoneState, RangeStats

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


class DefenceAdmin:
    def __init__(
        self,
        store: DefenceStore,
        limits: AbusePolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._limits = limits
        self._clock = clock

    async def blocks(self) -> list[Block]:
        return await self._store.blocks(self._clock())

    async def lift(self, kind: str, scope: str) -> Block:
        """End a block now; the next send to the range (or verify of the phone) passes
        that defence. The rule that set it may set it again if the traffic goes on."""
        if kind not in _KINDS:
            raise BlockNotFound()
        lifted = await self._store.lift_block(kind, scope, self._clock())
        if lifted is None:
            raise BlockNotFound()
        return lifted

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

    async def set_override(self, which: OverrideList, entry: str, present: bool) -> bool:
        if not is_override_entry(entry):
            raise InvalidOverride()
        return await self._store.set_override(which, entry, present)

    async def stats(self) -> list[RangeStats]:
        return await self._store.range_stats(self._clock())
