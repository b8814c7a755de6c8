"""The service voids a send whose store step timed out, once the store answers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from otpgate.domain.codes import CodeHasher
from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.limits import AbusePolicy
from otpgate.domain.policy import OtpPolicy
from otpgate.domain.ports import SendRequest
from otpgate.domain.service import OtpService
from otpgate.domain.voids import PendingVoids
from otpgate.store.reference import MemoryStore
from tests.fakes import CapturingSender, RecordingSigner

PHONE = "+12125550123"


class StallingStore(MemoryStore):
    """A memory store whose issue can time out *after* it ran, as a stalled backend's
    does, and which can be down for every other operation."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.lose_issue_answer = False
        self.voids = 0

    async def issue(self, *args: Any, **kwargs: Any) -> Any:
        if self.down and not self.lose_issue_answer:
            raise StoreUnavailable()
        outcome = await super().issue(*args, **kwargs)
        if self.lose_issue_answer:
            raise StoreUnavailable()  # it ran; its answer was lost
        return outcome

    async def void_issue(self, request: SendRequest, now: float) -> None:
        if self.down:
            raise StoreUnavailable()
        self.voids += 1
        await super().void_issue(request, now)


def _service(store: StallingStore, sender: CapturingSender) -> OtpService:
    return OtpService(
        store,
        sender,
        CodeHasher(b"k" * 32),
        OtpPolicy(),
        AbusePolicy(resend_cooldown_seconds=60),
        RecordingSigner(),
    )


async def test_a_send_whose_answer_was_lost_is_voided_before_the_phones_next_send() -> None:
    store, sender = StallingStore(), CapturingSender()
    service = _service(store, sender)
    store.lose_issue_answer = store.down = True
    with pytest.raises(StoreUnavailable):
        await service.request_code(PHONE, "198.51.100.7")
    assert len(service.pending_voids) == 1

    # Still down: the next send cannot settle the void, and says so.
    store.lose_issue_answer = False
    with pytest.raises(StoreUnavailable):
        await service.request_code(PHONE, "198.51.100.7")

    store.down = False
    sent = await service.request_code(PHONE, "198.51.100.7")  # no cooldown left behind
    assert sent.phone.e164 == PHONE
    assert len(sender.sent) == 1
    assert len(service.pending_voids) == 0
    await service.close()


async def test_the_background_void_waits_for_the_store_then_refunds() -> None:
    store = StallingStore()
    service = _service(store, CapturingSender())
    store.lose_issue_answer = True
    with pytest.raises(StoreUnavailable):
        await service.request_code(PHONE, "198.51.100.7")
    store.lose_issue_answer = False
    for _ in range(200):  # the background task gets its turns; bounded
        if not service.pending_voids:
            break
        await asyncio.sleep(0)
    assert len(service.pending_voids) == 0
    assert store.voids == 1
    assert (await store.begin_verify(PHONE, 300, 0.0, AbusePolicy().lockout)).code_hash is None
    await service.close()


async def test_queued_voids_are_bounded_and_close_says_what_was_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = StallingStore()
    store.down = True
    voids = PendingVoids(store, max_pending=3, first_pause=0.001, max_pause=0.001)
    for n in range(5):
        voids.add(_request(f"send-{n}"), 0.0)
    assert len(voids) == 3
    with caplog.at_level(logging.WARNING, logger="otpgate.domain.voids"):
        await voids.close()
    assert "5 sends whose store step timed out were not voided" in caplog.text


def _request(send_id: str) -> SendRequest:
    return SendRequest(
        phone=PHONE, code_hash=b"h", ttl_seconds=300, cooldown_seconds=60, send_id=send_id
    )
