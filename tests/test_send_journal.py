"""The send journal: a send whose outcome its process never learned is voided by another.

Two journals in one directory stand for two processes: a journal's lock is held per
open file, so one journal cannot take another's over while it is open, as a live
process's cannot be; closing its file without settling is what a process's death does.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from otpgate.domain.errors import OtpError, StoreUnavailable
from otpgate.domain.limits import ConversionGuard, DistinctQuota, Quota, SurgeGuard
from otpgate.domain.ports import Issued, SendRequest
from otpgate.domain.service import OtpService
from otpgate.domain.voids import BATCH, PendingVoids
from otpgate.store import journal as journal_module
from otpgate.store.journal import FileJournal
from otpgate.store.sqlite import SqliteStore
from otpgate.wiring import build_components
from tests.conftest import make_settings

PHONE = "+12125550100"


def request(send_id: str, phone: str = PHONE) -> SendRequest:
    return SendRequest(
        phone=phone,
        code_hash=bytes(range(32)),
        ttl_seconds=300,
        cooldown_seconds=30,
        quotas=(Quota("phone_send_limit", phone, 5, 3600), Quota("global_budget", "g", 9, 60, 6)),
        distinct=(DistinctQuota("ip_phone_limit", "ip:1", phone, 10, 3600),),
        surges=(SurgeGuard("prefix_blocked", "prefix:1212555", 20, 5.0, 300, 3600),),
        send_id=send_id,
        verification_id=f"VE{send_id}",
        purpose="login",
        channel="sms",
        retention_seconds=86_400,
        details="order 7",
        resume=True,
        ranges=("prefix:1212555", "country:US"),
        conversions=(ConversionGuard("prefix_blocked", "prefix:1212555", 50, 0.2, 3600, 300),),
        overrides=("country:US",),
    )


def died(journal: FileJournal) -> None:
    """What the kernel does for a process that dies: its file closes, its lock goes,
    and nothing of it writes again."""
    os.close(journal._fd)
    journal._fd = -1
    journal.opened = journal.settled = lambda *_: None  # type: ignore[method-assign]


def test_a_dead_process_s_unsettled_sends_are_taken_over_whole(tmp_path: Path) -> None:
    first = FileJournal(tmp_path)
    first.opened(request("a"), 1000.5)
    first.opened(request("b"), 1001.0)
    first.opened(request("c"), 1002.0)
    first.settled("b")
    second = FileJournal(tmp_path)
    assert second.orphans() == []  # the first is alive: its lock is held

    died(first)
    taken = second.orphans()
    assert taken == [(request("a"), 1000.5), (request("c"), 1002.0)]
    assert not first.path.exists()
    # They are the second's now: taken over again if it dies too.
    died(second)
    assert FileJournal(tmp_path).orphans() == taken


def test_a_line_cut_short_by_the_death_is_passed_over(tmp_path: Path) -> None:
    first = FileJournal(tmp_path)
    first.opened(request("a"), 5.0)
    first.opened(request("b"), 6.0)
    os.write(first._fd, b'{"settled": "a"')  # the process died mid-write
    died(first)
    assert FileJournal(tmp_path).orphans() == [(request("a"), 5.0), (request("b"), 6.0)]


def test_a_journal_closed_with_nothing_in_flight_goes(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path)
    journal.opened(request("a"), 5.0)
    journal.settled("a")
    journal.close()
    assert list(tmp_path.iterdir()) == []
    kept = FileJournal(tmp_path)
    kept.opened(request("b"), 5.0)
    kept.close()  # a send still in flight: kept for the next process
    assert FileJournal(tmp_path).orphans() == [(request("b"), 5.0)]


def test_a_journal_is_rewritten_with_only_the_sends_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 20_000)
    journal = FileJournal(tmp_path)
    journal.opened(request("kept"), 1.0)
    for n in range(200):
        journal.opened(request(f"s{n}"), 2.0)
        journal.settled(f"s{n}")
    assert journal.path.stat().st_size < 20_000
    assert len(journal) == 1
    died(journal)
    assert FileJournal(tmp_path).orphans() == [(request("kept"), 1.0)]


class _Hanging:
    """An SMS provider that takes the message and never answers."""

    name = "hanging"
    problem = None

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.sent: list[str] = []

    async def send(self, phone: str, message: str) -> str:
        self.sent.append(phone)
        self.called.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        return None


async def test_a_worker_killed_mid_send_leaves_no_charge(tmp_path: Path) -> None:
    """A worker dies while its provider call is in flight; another worker of the same
    service takes its journal over and voids the send: the phone may ask again at once,
    and its record says the send failed."""
    settings = make_settings(tmp_path, otp_resend_cooldown_seconds=60)
    dying, other = build_components(settings), build_components(settings)
    hanging = _Hanging()
    dying.service._sender = hanging
    try:
        send = asyncio.create_task(dying.service.request_code(PHONE, "203.0.113.9"))
        await asyncio.wait_for(hanging.called.wait(), 5)
        died(dying.service.pending_voids.journal)  # type: ignore[arg-type]

        sends = Quota("phone_send_limit", PHONE, 5, 3600)
        state = await other.store.phone_state(PHONE, time.time(), sends)
        assert state.code_pending and state.cooldown_until is not None
        # Without the journal the cooldown (60 s) refuses this.
        with pytest.raises(OtpError) as refused:
            await other.service.request_code(PHONE, "203.0.113.9")
        assert refused.value.code == "resend_cooldown"

        await other.service.start()
        state = await other.store.phone_state(PHONE, time.time(), sends)
        assert not state.code_pending and state.cooldown_until is None
        assert state.verification is None
        sent = await other.service.request_code(PHONE, "203.0.113.9")
        assert sent.verification_id
    finally:
        send.cancel()
        await other.close()
        await dying.store.close()


class _Stalled:
    """A store whose voids wait for ``open``; how many ran at once, at most."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.full = asyncio.Event()  # a whole batch in flight at once
        self.in_flight = 0
        self.most = 0
        self.voided: list[str] = []

    async def void_issue(self, request: SendRequest, now: float) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight == BATCH:
            self.full.set()
        await self.open.wait()
        self.in_flight -= 1
        self.voided.append(request.send_id)


async def test_queued_voids_go_in_concurrent_batches_once_the_store_is_back() -> None:
    store = _Stalled()
    voids = PendingVoids(store)  # type: ignore[arg-type]
    for n in range(1000):
        voids.add(request(f"s{n}", phone=f"+1212555{n:04d}"), 1.0)
    await asyncio.wait_for(store.full.wait(), 5)
    store.open.set()
    assert voids._task is not None
    await asyncio.wait_for(voids._task, 5)
    assert len(voids) == 0
    assert store.most == BATCH
    assert sorted(store.voided) == sorted(f"s{n}" for n in range(1000))
    await voids.close()


async def test_a_phone_settles_its_own_queued_void_without_the_others(tmp_path: Path) -> None:
    calls: list[str] = []

    class Store:
        down = True

        async def void_issue(self, request: SendRequest, now: float) -> None:
            if self.down:
                raise StoreUnavailable()
            calls.append(request.send_id)

    store = Store()
    voids = PendingVoids(store, FileJournal(tmp_path), first_pause=60)  # type: ignore[arg-type]
    for n in range(500):
        voids.journal.opened(request(f"s{n}", phone=f"+1212555{n:04d}"), 1.0)
        voids.add(request(f"s{n}", phone=f"+1212555{n:04d}"), 1.0)
    store.down = False
    await voids.settle("+12125550007")
    assert calls == ["s7"]
    assert len(voids) == 499
    assert len(voids.journal) == 499  # type: ignore[arg-type]
    await voids.close()


def test_the_journal_keeps_what_the_store_was_given(tmp_path: Path) -> None:
    """The request a journal gives back issues and voids as the original does."""

    async def run() -> Any:
        store = SqliteStore(tmp_path / "s.sqlite3")
        try:
            journal = FileJournal(tmp_path / "j")
            journal.opened(request("x"), 1000.0)
            died(journal)
            [(back, now)] = FileJournal(tmp_path / "j").orphans()
            issued = await store.issue(back, now)
            assert isinstance(issued, Issued)
            await store.void_issue(back, now)
            state = await store.phone_state(PHONE, now + 1, back.quotas[0])
            return state
        finally:
            await store.close()

    state = asyncio.run(run())
    assert not state.code_pending and state.cooldown_until is None
    assert state.sends_in_window == 0


def test_the_service_journals_through_its_voids(tmp_path: Path) -> None:
    components = build_components(make_settings(tmp_path))
    assert isinstance(components.service, OtpService)
    assert isinstance(components.service.pending_voids.journal, FileJournal)
    asyncio.run(components.close())


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_send_that_never_reached_redis_leaves_nothing_to_void(
    tmp_path: Path, fast_path: bool
) -> None:
    """Nothing listens at the store's address: the step was never sent, so after a
    Redis restart there is no queue of voids to work through. redis-py's client (the
    stock path) does not tell a refused connection from a lost answer: it queues."""
    settings = make_settings(
        tmp_path, redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.2, fast_path=fast_path
    )
    components = build_components(settings)
    try:
        with pytest.raises(StoreUnavailable) as failed:
            await components.service.request_code(PHONE, "203.0.113.9")
        assert failed.value.may_have_run is not fast_path
        voids = components.service.pending_voids
        assert len(voids) == (0 if fast_path else 1)
        assert len(voids.journal) == len(voids)  # type: ignore[arg-type]
    finally:
        await components.close()
