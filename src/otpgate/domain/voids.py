"""Sends to void once the store answers again.

A store step that times out may still run: a stalled backend (paused, overloaded,
partitioned) keeps the request and executes it when it recovers. For a send that
would leave a code, a cooldown and every quota charged with no SMS out, so the
user's retry is refused. Each such send is queued here and voided by its id as
soon as the store answers (``OtpStore.void_issue``): whether the step had run,
runs later or never runs, nothing of it is left.

The queue lives in this process; the journal (``SendJournal``) makes it outlive the
process. Every send is in the journal until its outcome is settled, and a void
settles it. ``recover`` takes over the unsettled sends of processes that are gone
(killed mid-send, or stopped with voids still queued) and voids them here: at
start-up, before the process serves, and every ``ORPHAN_SECONDS`` after.

One task voids the queue in concurrent batches of ``BATCH`` (one round trip each on
a pipelined connection), retrying with a growing pause while the store is down, so
thousands of queued voids after an outage take a few round trips, not one each. A
phone's next send first settles its own entries inline (found by phone, not by a scan
of the queue), so a retry right after the store recovers is not refused by a
cooldown a late step left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.ports import OtpStore, SendJournal, SendRequest

log = logging.getLogger(__name__)

BATCH = 64
# How often a running process looks for journals of processes that are gone.
ORPHAN_SECONDS = 2.0


@dataclass(frozen=True, slots=True, eq=False)
class _Void:
    request: SendRequest
    now: float


class NoJournal:
    """Sends journaled nowhere: the queue alone, for a store that dies with the
    process (the in-memory reference store)."""

    def opened(self, request: SendRequest, now: float) -> None:
        return None

    def settled(self, send_id: str) -> None:
        return None

    def orphans(self) -> list[tuple[SendRequest, float]]:
        return []

    def close(self) -> None:
        return None


class PendingVoids:
    def __init__(
        self,
        store: OtpStore,
        journal: SendJournal | None = None,
        *,
        max_pending: int = 10_000,
        first_pause: float = 0.05,
        max_pause: float = 1.0,
    ) -> None:
        self._store = store
        self.journal: SendJournal = journal if journal is not None else NoJournal()
        self._max_pending = max_pending
        self._first_pause = first_pause
        self._max_pause = max_pause
        self._pending: dict[str, _Void] = {}  # by send id, oldest first
        self._by_phone: dict[str, set[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._dropped = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, request: SendRequest, now: float) -> None:
        """Queue the send issued at ``now`` for voiding; ``now`` is the issue's clock."""
        if len(self._pending) >= self._max_pending:
            # Past this many the store has been gone long enough that the oldest
            # charges lapse on their own soon; memory stays bounded. The journal keeps
            # them, for the next process.
            self._forget(next(iter(self._pending.values())))
            self._dropped += 1
        self._queue(request, now)
        self._start_draining()

    def _queue(self, request: SendRequest, now: float) -> _Void:
        entry = self._pending.get(request.send_id)
        if entry is None:
            entry = self._pending[request.send_id] = _Void(request, now)
            self._by_phone.setdefault(request.phone, set()).add(request.send_id)
        return entry

    def _start_draining(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def void(self, request: SendRequest, now: float) -> None:
        """Void one send now; queued when the store does not answer."""
        try:
            await self._store.void_issue(request, now)
        except StoreUnavailable:
            self.add(request, now)
        else:
            self.journal.settled(request.send_id)

    async def settle(self, phone: str) -> None:
        """Void this phone's queued sends now; raise StoreUnavailable if the store is
        still down (the caller's send would fail the same way)."""
        for send_id in list(self._by_phone.get(phone, ())):
            entry = self._pending.get(send_id)
            if entry is not None:
                await self._store.void_issue(entry.request, entry.now)
                self._done(entry)

    async def recover(self) -> int:
        """Take over the sends of processes that are gone and void them, batch after
        batch while the store answers (what it does not stays queued); how many were
        taken over."""
        taken = self.journal.orphans()
        if not taken:
            return 0
        log.warning("voiding %d sends left unsettled by a process that stopped", len(taken))
        entries = [self._queue(request, now) for request, now in taken]
        with contextlib.suppress(StoreUnavailable):
            while left := [e for e in entries if e.request.send_id in self._pending]:
                await self._void_batch(left[:BATCH])
        if self._pending:
            self._start_draining()
        return len(taken)

    def watch(self) -> None:
        """Look for journals of processes that are gone every ``ORPHAN_SECONDS``."""
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_orphans())

    async def close(self) -> None:
        for task in (self._watch, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pending or self._dropped:
            log.warning(
                "%d sends whose store step timed out were not voided; "
                "the journal keeps them for the next start to void",
                len(self._pending) + self._dropped,
            )
        self.journal.close()

    def _forget(self, entry: _Void) -> None:
        send_id, phone = entry.request.send_id, entry.request.phone
        if self._pending.pop(send_id, None) is None:
            return  # voided meanwhile by the other path
        ids = self._by_phone.get(phone)
        if ids is not None:
            ids.discard(send_id)
            if not ids:
                del self._by_phone[phone]

    def _done(self, entry: _Void) -> None:
        self._forget(entry)
        self.journal.settled(entry.request.send_id)

    async def _void_batch(self, batch: list[_Void]) -> int:
        """Void ``batch`` concurrently; how many were voided. Raises StoreUnavailable
        when the store answered none of them."""
        results = await asyncio.gather(
            *(self._store.void_issue(e.request, e.now) for e in batch), return_exceptions=True
        )
        voided = 0
        for entry, result in zip(batch, results, strict=True):
            if isinstance(result, StoreUnavailable):
                continue
            if isinstance(result, BaseException):
                log.error("voiding a send failed; its charges lapse on their own", exc_info=result)
            self._done(entry)
            voided += 1
        if batch and not voided:
            raise StoreUnavailable()
        return voided

    async def _drain(self) -> None:
        pause, voided = self._first_pause, 0
        while self._pending:
            try:
                voided += await self._void_batch(list(self._pending.values())[:BATCH])
            except StoreUnavailable:
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._max_pause)
                continue
            pause = self._first_pause
        if voided:
            log.info("voided %d sends whose store step had timed out", voided)

    async def _watch_orphans(self) -> None:
        while True:
            await asyncio.sleep(ORPHAN_SECONDS)
            try:
                await self.recover()
            except OSError as exc:
                log.warning("could not read the send journals: %s", exc)
