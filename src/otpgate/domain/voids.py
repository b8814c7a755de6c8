"""Sends to void once the store answers again.

A store step that times out may still run: a stalled backend (paused, overloaded,
partitioned) keeps the request and executes it when it recovers. For a send that
would leave a code, a cooldown and every quota charged with no SMS out, so the
user's retry is refused. Each such send is queued here and voided by its id as
soon as the store answers (``OtpStore.void_issue``): whether the step had run,
runs later or never runs, nothing of it is left.

One task retries the oldest entry with a growing pause while the store is down,
then works through the rest at once. A phone's next send first settles its own
entries inline, so a retry right after the store recovers is not refused by a
cooldown a late step left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.ports import OtpStore, SendRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, eq=False)
class _Void:
    request: SendRequest
    now: float


class PendingVoids:
    def __init__(
        self,
        store: OtpStore,
        *,
        max_pending: int = 10_000,
        first_pause: float = 0.05,
        max_pause: float = 1.0,
    ) -> None:
        self._store = store
        self._max_pending = max_pending
        self._first_pause = first_pause
        self._max_pause = max_pause
        self._pending: list[_Void] = []
        self._task: asyncio.Task[None] | None = None
        self._dropped = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, request: SendRequest, now: float) -> None:
        """Queue the send issued at ``now`` for voiding; ``now`` is the issue's clock."""
        if len(self._pending) >= self._max_pending:
            # Past this many the store has been gone long enough that the oldest
            # charges lapse on their own soon; memory stays bounded.
            self._pending.pop(0)
            self._dropped += 1
        self._pending.append(_Void(request, now))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def settle(self, phone: str) -> None:
        """Void this phone's queued sends now; raise StoreUnavailable if the store is
        still down (the caller's send would fail the same way)."""
        for entry in [e for e in self._pending if e.request.phone == phone]:
            await self._store.void_issue(entry.request, entry.now)
            self._discard(entry)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pending or self._dropped:
            log.warning(
                "%d sends whose store step timed out were not voided; "
                "their cooldowns and charges lapse on their own",
                len(self._pending) + self._dropped,
            )

    def _discard(self, entry: _Void) -> None:
        with contextlib.suppress(ValueError):  # voided meanwhile by the other path
            self._pending.remove(entry)

    async def _drain(self) -> None:
        pause, voided = self._first_pause, 0
        while self._pending:
            entry = self._pending[0]
            try:
                await self._store.void_issue(entry.request, entry.now)
            except StoreUnavailable:
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._max_pause)
                continue
            except Exception:
                log.exception("voiding a send failed; its charges lapse on their own")
            self._discard(entry)
            voided += 1
            pause = self._first_pause
        if voided:
            log.info("voided %d sends whose store step had timed out", voided)
