"""One contract, both stores: what every OtpStore must do, step by step.

Time is passed in explicitly, so expiry and windows are tested without waiting.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from otpgate.store.base import Issued, Quota, Refused, SendRequest
from otpgate.store.sqlite import SqliteStore

PHONE = "+12125550101"
H1 = b"\x01" * 32
H2 = b"\x02" * 32


def send(code_hash: bytes = H1, **kw: object) -> SendRequest:
    values: dict[str, object] = {
        "phone": PHONE,
        "code_hash": code_hash,
        "ttl_seconds": 300,
        "cooldown_seconds": 0,
        "quotas": (),
    }
    values.update(kw)
    return SendRequest(**values)  # type: ignore[arg-type]


async def test_issue_then_verify_then_consume_once(store) -> None:
    now = time.time()
    assert isinstance(await store.issue(send(), now), Issued)
    attempt = await store.begin_verify(PHONE, 300, now)
    assert attempt.attempts == 1
    assert attempt.code_hash == H1
    assert await store.consume(PHONE, H1, now) is True
    assert await store.consume(PHONE, H1, now) is False
    after = await store.begin_verify(PHONE, 300, now)
    assert after.code_hash is None


async def test_consume_refuses_other_hash(store) -> None:
    now = time.time()
    await store.issue(send(), now)
    assert await store.consume(PHONE, H2, now) is False
    assert (await store.begin_verify(PHONE, 300, now)).code_hash == H1


async def test_attempts_count_up_and_reset_on_new_code(store) -> None:
    now = time.time()
    await store.issue(send(), now)
    counts = [(await store.begin_verify(PHONE, 300, now)).attempts for _ in range(3)]
    assert counts == [1, 2, 3]
    await store.issue(send(H2), now)
    attempt = await store.begin_verify(PHONE, 300, now)
    assert (attempt.attempts, attempt.code_hash) == (1, H2)


async def test_attempts_counted_for_phone_without_code(store) -> None:
    now = time.time()
    counts = [(await store.begin_verify(PHONE, 300, now)).attempts for _ in range(3)]
    assert counts == [1, 2, 3]


async def test_code_expires(store) -> None:
    past = time.time() - 301
    await store.issue(send(), past)
    attempt = await store.begin_verify(PHONE, 300, time.time())
    assert attempt.code_hash is None
    assert attempt.attempts == 1
    assert await store.consume(PHONE, H1, time.time()) is False


async def test_new_code_replaces_old(store) -> None:
    now = time.time()
    await store.issue(send(H1), now)
    await store.issue(send(H2), now)
    assert await store.consume(PHONE, H1, now) is False
    assert await store.consume(PHONE, H2, now) is True


async def test_cooldown_refuses_then_lapses(store) -> None:
    now = time.time()
    assert isinstance(await store.issue(send(cooldown_seconds=60), now), Issued)
    refused = await store.issue(send(H2, cooldown_seconds=60), now + 10)
    assert isinstance(refused, Refused)
    assert refused.kind == "resend_cooldown"
    assert 49 <= refused.retry_after <= 51
    # Nothing changed: the first code is still the live one.
    assert (await store.begin_verify(PHONE, 300, now + 10)).code_hash == H1
    assert isinstance(await store.issue(send(H2, cooldown_seconds=60), now + 61), Issued)


async def test_quota_refuses_past_limit_without_charging(store) -> None:
    quota = Quota("phone_send_limit", PHONE, limit=3, window_seconds=600)
    # Start of a window, so the previous (empty) window carries no weight.
    now = (time.time() // 600) * 600 + 1
    for i in range(3):
        assert isinstance(await store.issue(send(bytes([i]) * 32, quotas=(quota,)), now), Issued)
    refused = await store.issue(send(H2, quotas=(quota,)), now)
    assert isinstance(refused, Refused)
    assert refused.kind == "phone_send_limit"
    assert refused.retry_after >= 1
    # The refused send stored nothing.
    assert (await store.begin_verify(PHONE, 300, now)).code_hash == bytes([2]) * 32


async def test_quota_slides_into_next_window(store) -> None:
    quota = Quota("phone_send_limit", PHONE, limit=2, window_seconds=600)
    start = (time.time() // 600) * 600 + 1
    for i in range(2):
        await store.issue(send(bytes([i]) * 32, quotas=(quota,)), start)
    # Early in the next window the previous one still weighs ~100%: refused.
    assert isinstance(await store.issue(send(H2, quotas=(quota,)), start + 600), Refused)
    # At the end of the next window it weighs ~0%: allowed again.
    assert isinstance(await store.issue(send(H2, quotas=(quota,)), start + 1198), Issued)


async def test_quotas_are_scoped_by_key(store) -> None:
    now = time.time()
    q_a = Quota("phone_send_limit", PHONE, limit=1, window_seconds=600)
    q_b = Quota("phone_send_limit", "+12125550102", limit=1, window_seconds=600)
    assert isinstance(await store.issue(send(quotas=(q_a,)), now), Issued)
    assert isinstance(await store.issue(send(phone="+12125550102", quotas=(q_b,)), now), Issued)


async def test_undo_removes_code_and_refunds(store) -> None:
    quota = Quota("phone_send_limit", PHONE, limit=1, window_seconds=600)
    now = time.time()
    issued = await store.issue(send(cooldown_seconds=60, quotas=(quota,)), now)
    assert isinstance(issued, Issued)
    await store.undo_issue(issued)
    assert (await store.begin_verify(PHONE, 300, now)).code_hash is None
    # Neither the cooldown nor the quota was charged: a new send goes through at once.
    assert isinstance(
        await store.issue(send(H2, cooldown_seconds=60, quotas=(quota,)), now), Issued
    )


async def test_undo_leaves_a_newer_code_alone(store) -> None:
    now = time.time()
    first = await store.issue(send(H1), now)
    assert isinstance(first, Issued)
    await store.issue(send(H2), now)
    await store.undo_issue(first)
    assert (await store.begin_verify(PHONE, 300, now)).code_hash == H2


async def test_fixed_window_counts_and_resets(store) -> None:
    now = time.time()
    hits = [await store.hit_window("rl:test:1.2.3.4", 60_000, now) for _ in range(3)]
    assert [h.count for h in hits] == [1, 2, 3]
    assert 0 < hits[-1].reset_after_ms <= 60_000
    other = await store.hit_window("rl:test:5.6.7.8", 60_000, now)
    assert other.count == 1


async def test_concurrent_consumes_have_one_winner(store) -> None:
    now = time.time()
    await store.issue(send(), now)
    results = await asyncio.gather(*(store.consume(PHONE, H1, now) for _ in range(50)))
    assert results.count(True) == 1


async def test_ping(store) -> None:
    await store.ping()


async def test_sqlite_two_connections_share_one_file(tmp_path: Path) -> None:
    """Two workers on one host each open the file: one code, one winner."""
    path = tmp_path / "shared.sqlite3"
    a, b = SqliteStore(path), SqliteStore(path)
    try:
        now = time.time()
        await a.issue(send(), now)
        assert (await b.begin_verify(PHONE, 300, now)).code_hash == H1
        results = await asyncio.gather(*(s.consume(PHONE, H1, now) for s in [a, b] * 25))
        assert results.count(True) == 1
    finally:
        await a.close()
        await b.close()
