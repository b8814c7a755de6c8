"""One contract, every store: what every OtpStore must do, step by step.

Time is passed in explicitly, so expiry and windows are tested without waiting.
The in-memory reference runs it too, so it is checked against the same cases;
the Redis store runs it over both of its clients: the pipelined connection and
redis-py's own (``fast_path=False``), on one server and on a Redis Cluster of three
masters (tests/redis_cluster.py, one for the module; each test's prefix hashes to a
slot of its own, so the tests land on every master).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
import redis

from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.limits import DistinctQuota, Lockout, Quota, SurgeGuard
from otpgate.domain.ports import (
    SENDS_KEPT,
    Issued,
    OtpStore,
    Refused,
    RequestWindow,
    SendRequest,
)
from otpgate.store.redis.store import RedisStore
from otpgate.store.reference import MemoryStore
from otpgate.store.sqlite import SqliteStore
from tests.redis_server import PrivateRedis

PHONE = "+12125550101"
H1 = b"\x01" * 32
H2 = b"\x02" * 32
LOCK = Lockout()
# These tests are about what the stores decide, not how fast: the service's 0.5 s can
# run out connecting to the cluster (asking its nodes where the slot is) while the rest
# of the suite loads this 2-core machine, as it once did in CI. Timeouts have tests of
# their own (test_redis_connection, test_redis_cluster, test_redis_outage).
SEMANTICS_TIMEOUT = 5.0


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("redis-stock", marks=pytest.mark.integration),
        pytest.param("redis-cluster", marks=pytest.mark.integration),
        pytest.param("redis-cluster-stock", marks=pytest.mark.integration),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OtpStore]:
    """This module's own store fixture: every store kind, not only those the API tests use."""
    kind = request.param
    s: OtpStore
    if kind.startswith("redis-cluster"):
        cluster = request.getfixturevalue("redis_cluster")
        s = RedisStore(
            cluster.url,
            prefix=f"otpgate-test:{uuid.uuid4().hex}:",
            fast_path=kind == "redis-cluster",
            phone_state_seconds=DAY,
            timeout=SEMANTICS_TIMEOUT,
        )
    elif kind.startswith("redis"):
        s = RedisStore(
            request.getfixturevalue("redis_url"),
            prefix=request.getfixturevalue("redis_prefix"),
            fast_path=kind == "redis",
            phone_state_seconds=DAY,
            timeout=SEMANTICS_TIMEOUT,
        )
    elif kind == "sqlite":
        s = SqliteStore(tmp_path / "otpgate.sqlite3")
    else:
        s = MemoryStore()
    yield s
    await s.close()


# The longest code, cooldown or send window these tests give a store.
DAY = 86_400


def send(code_hash: bytes = H1, **kw: object) -> SendRequest:
    values: dict[str, object] = {
        "phone": PHONE,
        "code_hash": code_hash,
        # Long enough that window-aligned times in the recent past are still live:
        # Redis expires keys by its own clock, SQLite by the ``now`` it is given.
        "ttl_seconds": 3600,
        "cooldown_seconds": 0,
        "quotas": (),
        "send_id": uuid.uuid4().hex,
    }
    values.update(kw)
    return SendRequest(**values)  # type: ignore[arg-type]


async def test_issue_then_verify_then_consume_once(store) -> None:
    now = time.time()
    assert isinstance(await store.issue(send(), now), Issued)
    attempt = await store.begin_verify(PHONE, 300, now, LOCK)
    assert attempt.attempts == 1
    assert attempt.code_hash == H1
    assert await store.consume(PHONE, H1, now) is True
    assert await store.consume(PHONE, H1, now) is False
    after = await store.begin_verify(PHONE, 300, now, LOCK)
    assert after.code_hash is None


async def test_consume_refuses_other_hash(store) -> None:
    now = time.time()
    await store.issue(send(), now)
    assert await store.consume(PHONE, H2, now) is False
    assert (await store.begin_verify(PHONE, 300, now, LOCK)).code_hash == H1


async def test_attempts_count_up_and_reset_on_new_code(store) -> None:
    now = time.time()
    await store.issue(send(), now)
    counts = [(await store.begin_verify(PHONE, 300, now, LOCK)).attempts for _ in range(3)]
    assert counts == [1, 2, 3]
    await store.issue(send(H2), now)
    attempt = await store.begin_verify(PHONE, 300, now, LOCK)
    assert (attempt.attempts, attempt.code_hash) == (1, H2)


async def test_attempts_counted_for_phone_without_code(store) -> None:
    now = time.time()
    counts = [(await store.begin_verify(PHONE, 300, now, LOCK)).attempts for _ in range(3)]
    assert counts == [1, 2, 3]


async def test_code_expires(store) -> None:
    past = time.time() - 301
    await store.issue(send(ttl_seconds=300), past)
    attempt = await store.begin_verify(PHONE, 300, time.time(), LOCK)
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
    assert (await store.begin_verify(PHONE, 300, now + 10, LOCK)).code_hash == H1
    assert isinstance(await store.issue(send(H2, cooldown_seconds=60), now + 61), Issued)


async def test_quota_refuses_past_limit_without_charging(store) -> None:
    quota = Quota("phone_send_limit", PHONE, limit=3, window_seconds=600)
    now = time.time()
    for i in range(3):
        issued = await store.issue(send(bytes([i]) * 32, quotas=(quota,)), now)
        assert isinstance(issued, Issued)
    refused = await store.issue(send(H2, quotas=(quota,)), now)
    assert isinstance(refused, Refused)
    assert refused.kind == "phone_send_limit"
    assert refused.retry_after == 600  # all three were sent this instant
    # The refused send stored nothing.
    assert (await store.begin_verify(PHONE, 300, now, LOCK)).code_hash == bytes([2]) * 32


def at_ms(ms: int) -> float:
    """A whole-millisecond instant as the float seconds a store is given."""
    return ms / 1000


async def test_sliding_log_frees_a_place_when_the_oldest_send_leaves(store) -> None:
    """Any span of the window holds at most ``limit`` sends, whatever the clock's
    alignment; Retry-After is the exact wait, rounded up to a whole second.
    (Times from now on: Redis forgets a log by its own clock.)"""
    quota = Quota("phone_send_limit", PHONE, limit=2, window_seconds=600)
    t0 = round(time.time() * 1000)
    assert isinstance(await store.issue(send(H1, quotas=(quota,)), at_ms(t0)), Issued)
    assert isinstance(await store.issue(send(H2, quotas=(quota,)), at_ms(t0 + 100_000)), Issued)
    early = await store.issue(send(H2, quotas=(quota,)), at_ms(t0 + 300_000))
    assert isinstance(early, Refused)
    assert early.retry_after == 300  # until t0 + 600 s, when the first send leaves
    late = await store.issue(send(H2, quotas=(quota,)), at_ms(t0 + 599_999))
    assert isinstance(late, Refused)
    assert late.retry_after == 1  # 1 ms, rounded up
    assert isinstance(await store.issue(send(H1, quotas=(quota,)), at_ms(t0 + 600_000)), Issued)
    # Now t0 + 100 s and t0 + 600 s are in the log: full until t0 + 700 s.
    again = await store.issue(send(H2, quotas=(quota,)), at_ms(t0 + 650_000))
    assert isinstance(again, Refused)
    assert again.retry_after == 50


async def test_sub_windows_never_undercount_the_window(store) -> None:
    """A budget in 10 sub-windows counts each one that overlaps the window: a send
    can be refused up to a sub-window (here 60 s) before an exact log would allow
    it, never allowed earlier."""
    budget = Quota("global_budget", "global", limit=2, window_seconds=600, buckets=10)
    j = int(time.time() // 60) + 1  # a sub-window ahead of the real clock
    base = j * 60_000

    def go(code_hash: bytes, ms: int) -> Awaitable[Issued | Refused]:
        return store.issue(send(code_hash, quotas=(budget,)), at_ms(base + ms))

    assert isinstance(await go(H1, 10_000), Issued)
    assert isinstance(await go(H2, 20_000), Issued)
    full = await go(H1, 30_000)
    assert isinstance(full, Refused)
    assert full.kind == "global_budget"
    # Sub-window j is counted until (j + 1) * 60 s + 600 s: 630 s from here.
    assert full.retry_after == 630
    # An exact log would let a send through once the first left (base + 610 s).
    later = await go(H1, 610_000)
    assert isinstance(later, Refused)
    assert later.retry_after == 50
    assert isinstance(await go(H1, 659_999), Refused)
    assert isinstance(await go(H1, 660_000), Issued)


async def test_quotas_are_scoped_by_key(store) -> None:
    now = time.time()
    q_a = Quota("phone_send_limit", PHONE, limit=1, window_seconds=600)
    q_b = Quota("phone_send_limit", "+12125550102", limit=1, window_seconds=600)
    assert isinstance(await store.issue(send(quotas=(q_a,)), now), Issued)
    assert isinstance(await store.issue(send(phone="+12125550102", quotas=(q_b,)), now), Issued)


async def test_void_removes_code_and_refunds(store) -> None:
    quotas = (
        Quota("phone_send_limit", PHONE, limit=1, window_seconds=600),
        Quota("global_budget", "global", limit=1, window_seconds=3600, buckets=10),
    )
    now = time.time()
    issued = await store.issue(send(cooldown_seconds=60, quotas=quotas), now)
    assert isinstance(issued, Issued)
    await store.void_issue(issued.request, issued.now)
    assert (await store.begin_verify(PHONE, 300, now, LOCK)).code_hash is None
    # Neither the cooldown nor a quota was charged: a new send goes through at once.
    assert isinstance(await store.issue(send(H2, cooldown_seconds=60, quotas=quotas), now), Issued)


async def test_void_removes_only_its_own_log_entry(store) -> None:
    """Two sends in the same millisecond are two log entries; a void takes out the
    one with its send_id, not every entry at that time."""
    quota = Quota("phone_send_limit", PHONE, limit=2, window_seconds=600)
    now = time.time()
    assert isinstance(await store.issue(send(H1, quotas=(quota,)), now), Issued)
    second = await store.issue(send(H2, quotas=(quota,)), now)
    assert isinstance(second, Issued)
    await store.void_issue(second.request, second.now)
    assert isinstance(await store.issue(send(H2, quotas=(quota,)), now), Issued)
    refused = await store.issue(send(H1, quotas=(quota,)), now)
    assert isinstance(refused, Refused)
    assert refused.kind == "phone_send_limit"


async def test_void_leaves_a_newer_code_alone(store) -> None:
    now = time.time()
    first = await store.issue(send(H1), now)
    assert isinstance(first, Issued)
    await store.issue(send(H2), now)
    await store.void_issue(first.request, first.now)
    assert (await store.begin_verify(PHONE, 300, now, LOCK)).code_hash == H2


async def test_a_send_voided_before_its_step_runs_never_charges(store) -> None:
    """A step that timed out on its way to a stalled backend may run after the void."""
    quotas = (
        Quota("phone_send_limit", PHONE, limit=1, window_seconds=600),
        Quota("global_budget", "global", limit=1, window_seconds=3600, buckets=10),
    )
    now = time.time()
    late = send(H1, cooldown_seconds=60, quotas=quotas)
    await store.void_issue(late, now)
    with pytest.raises(StoreUnavailable):
        await store.issue(late, now)
    # No code, no cooldown, no quota: the retry goes through at once.
    assert (await store.begin_verify(PHONE, 300, now, LOCK)).code_hash is None
    assert isinstance(await store.issue(send(H2, cooldown_seconds=60, quotas=quotas), now), Issued)


async def test_voiding_twice_refunds_once(store) -> None:
    budget = Quota("global_budget", "global", limit=2, window_seconds=3600, buckets=10)
    now = time.time()
    kept = await store.issue(send(H1, phone="+12125550001", quotas=(budget,)), now)
    voided = await store.issue(send(H2, phone="+12125550002", quotas=(budget,)), now)
    assert isinstance(kept, Issued) and isinstance(voided, Issued)
    await store.void_issue(voided.request, now)
    await store.void_issue(voided.request, now)
    assert isinstance(
        await store.issue(send(H1, phone="+12125550003", quotas=(budget,)), now), Issued
    )
    refused = await store.issue(send(H2, phone="+12125550004", quotas=(budget,)), now)
    assert isinstance(refused, Refused)
    assert refused.kind == "global_budget"


async def test_fixed_window_counts_and_resets(store) -> None:
    now = time.time()
    window = RequestWindow("rl:test:1.2.3.4", 3, 60_000)
    hits = [await store.hit_window(window, now) for _ in range(4)]
    assert [h.count for h in hits] == [1, 2, 3, 4]
    assert [h.over(window) for h in hits] == [False, False, False, True]
    assert 0 < hits[-1].reset_after_ms <= 60_000
    other = await store.hit_window(RequestWindow("rl:test:5.6.7.8", 3, 60_000), now)
    assert other.count == 1


async def test_fixed_window_runs_on_the_callers_clock(store) -> None:
    """The window starts and ends by the ``now`` the caller passes, to the millisecond,
    however far that is from the store's own clock."""
    start_ms = round(time.time() * 1000)

    def at(ms: int) -> float:
        # Whole milliseconds, divided once: Redis counts in integer ms, and a float sum
        # such as now + 0.001 can land a hair under the millisecond it means.
        return (start_ms + ms) / 1000

    window = RequestWindow("rl:test:192.0.2.7", 10, 60_000)
    first = await store.hit_window(window, at(0))
    assert (first.count, first.reset_after_ms) == (1, 60_000)
    second = await store.hit_window(window, at(1))
    assert (second.count, second.reset_after_ms) == (2, 59_999)
    late = await store.hit_window(window, at(59_999))
    assert (late.count, late.reset_after_ms) == (3, 1)
    # A window later by the caller's clock (not by Redis's): a new window.
    fresh = await store.hit_window(window, at(60_000))
    assert (fresh.count, fresh.reset_after_ms) == (1, 60_000)


async def test_request_window_is_counted_inside_issue(store) -> None:
    now = time.time()
    window = RequestWindow("rl:request-otp:198.51.100.1", 2, 60_000)
    first = await store.issue(send(H1), now, window)
    assert isinstance(first, Issued)
    assert first.window_hit is not None
    assert first.window_hit.count == 1
    second = await store.issue(send(H2, cooldown_seconds=60), now, window)
    assert isinstance(second, Issued)
    third = await store.issue(send(bytes(32)), now, window)
    assert isinstance(third, Refused)
    assert third.kind == "rate_limited"
    assert third.window_hit is not None
    assert third.window_hit.count == 3
    # Over the window nothing else happened: H2 is still the live code.
    assert (await store.begin_verify(PHONE, 300, now, LOCK)).code_hash == H2


async def test_refusal_by_another_limit_still_counts_the_window(store) -> None:
    now = time.time()
    window = RequestWindow("rl:request-otp:198.51.100.2", 10, 60_000)
    await store.issue(send(H1, cooldown_seconds=60), now, window)
    refused = await store.issue(send(H2, cooldown_seconds=60), now, window)
    assert isinstance(refused, Refused)
    assert refused.kind == "resend_cooldown"
    assert refused.window_hit is not None
    assert refused.window_hit.count == 2


async def test_request_window_is_counted_inside_begin_verify(store) -> None:
    now = time.time()
    window = RequestWindow("rl:verify-otp:198.51.100.3", 2, 60_000)
    await store.issue(send(), now)
    a = await store.begin_verify(PHONE, 300, now, LOCK, window)
    b = await store.begin_verify(PHONE, 300, now, LOCK, window)
    c = await store.begin_verify(PHONE, 300, now, LOCK, window)
    assert [x.window_hit.count for x in (a, b, c) if x.window_hit] == [1, 2, 3]
    assert (a.attempts, b.attempts) == (1, 2)
    assert c.attempts == 0  # over the window, the attempt was not counted
    assert c.code_hash is None
    assert (await store.begin_verify(PHONE, 300, now, LOCK)).attempts == 3


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
        assert (await b.begin_verify(PHONE, 300, now, LOCK)).code_hash == H1
        results = await asyncio.gather(*(s.consume(PHONE, H1, now) for s in [a, b] * 25))
        assert results.count(True) == 1
    finally:
        await a.close()
        await b.close()


@pytest.mark.integration
async def test_redis_before_7_counts_windows_by_its_own_clock(tmp_path: Path) -> None:
    """Redis < 7.0 has no PEXPIRETIME: the scripts fall back to the time left (PTTL)."""
    server = PrivateRedis(tmp_path, "--rename-command", "PEXPIRETIME", "")
    server.start()
    store = RedisStore(server.url, prefix="t:", phone_state_seconds=DAY)
    try:
        now = time.time()
        window = RequestWindow("rl:test:192.0.2.8", 1, 60_000)
        hits = [await store.hit_window(window, now) for _ in range(2)]
        assert [h.count for h in hits] == [1, 2]
        assert all(59_000 < h.reset_after_ms <= 60_000 for h in hits)
        await store.issue(send(), now)
        lock = Lockout(threshold=5)
        for _ in range(2):
            attempt = await store.begin_verify(PHONE, 300, now, lock, window)
            assert attempt.attempts == 0  # over the window
        assert (await store.begin_verify(PHONE, 300, now, lock)).attempts == 1
        # A guess with no live code: the failure record's expiry is read the old way.
        assert await store.consume(PHONE, H1, now) is True
        assert (await store.begin_verify(PHONE, 300, now, lock)).code_hash is None
        assert (await store.begin_verify(PHONE, 300, now, lock)).attempts == 2
    finally:
        await store.close()
        server.stop()


@pytest.mark.integration
async def test_redis_failure_record_lives_by_the_callers_clock(
    redis_url: str, redis_prefix: str
) -> None:
    """A later guess without a code extends the failures to its ``now`` + TTL, as in
    SQLite, even when the caller's clock is a day from the server's; and guesses at a
    number with no code make no key of their own, only an entry in the shared slices."""
    store = RedisStore(redis_url, prefix=redis_prefix, phone_state_seconds=600)
    sync = redis.Redis.from_url(redis_url)
    sends = Quota("phone_send_limit", PHONE, 5, 600)
    try:
        t1 = round(time.time()) + 86_400
        await store.begin_verify(PHONE, 300, t1, Lockout())
        await store.begin_verify(PHONE, 300, t1 + 100, Lockout())
        assert (await store.phone_state(PHONE, t1 + 399.999, sends)).failures == 2
        assert (await store.phone_state(PHONE, t1 + 400, sends)).failures == 0
        keys = [k.decode() for k in sync.scan_iter(f"{redis_prefix}*")]
        assert keys and all(k.startswith(f"{redis_prefix}{{phones}}:") for k in keys)
        # Filed under the slice (a quarter of the 600 s) holding the end, t1 + 400 s.
        slice_ms = 150_000
        filed = {int(k.split(":")[-2]) for k in keys if sync.hlen(k)}
        assert filed == {(t1 + 400) * 1000 // slice_ms}
    finally:
        sync.close()
        await store.close()


@pytest.mark.integration
async def test_redis_a_send_window_longer_than_the_span_is_logged_apart(
    redis_url: str, redis_prefix: str
) -> None:
    """A phone's send window past the record's span (10 minutes here) is a sorted set of
    its own: it still limits, a void still refunds it, operators still see its count."""
    store = RedisStore(redis_url, prefix=redis_prefix, phone_state_seconds=600)
    sync = redis.Redis.from_url(redis_url)
    hourly = Quota("phone_send_limit", PHONE, 2, 3600)
    try:
        now = round(time.time())
        sent = [await store.issue(send(ttl_seconds=300, quotas=(hourly,)), now + i) for i in (0, 1)]
        assert all(isinstance(s, Issued) for s in sent)
        refused = await store.issue(send(ttl_seconds=300, quotas=(hourly,)), now + 900)
        assert isinstance(refused, Refused) and refused.kind == "phone_send_limit"
        assert refused.retry_after == 3600 - 900
        assert sync.zcard(f"{redis_prefix}{{{PHONE}}}:log:phone_send_limit") == 2
        assert (await store.phone_state(PHONE, now + 900, hourly)).sends_in_window == 2
        last = sent[1]
        assert isinstance(last, Issued)
        await store.void_issue(last.request, last.now)
        assert (await store.phone_state(PHONE, now + 900, hourly)).sends_in_window == 1
        assert isinstance(
            await store.issue(send(ttl_seconds=300, quotas=(hourly,)), now + 900), Issued
        )
    finally:
        sync.close()
        await store.close()


@pytest.mark.integration
async def test_redis_refuses_a_code_that_outlives_the_span(
    redis_url: str, redis_prefix: str
) -> None:
    """The span is rounded up to 5 minutes times a power of two (600 s: 10 minutes); a
    code or cooldown past it is a wiring mistake, refused before anything is written."""
    store = RedisStore(redis_url, prefix=redis_prefix, phone_state_seconds=600)
    try:
        now = time.time()
        with pytest.raises(ValueError, match="outlives"):
            await store.issue(send(ttl_seconds=601), now)
        with pytest.raises(ValueError, match="outlives"):
            await store.begin_verify(PHONE, 601, now, Lockout())
        assert isinstance(
            await store.issue(send(ttl_seconds=600, cooldown_seconds=600), now), Issued
        )
    finally:
        await store.close()


@pytest.mark.integration
async def test_redis_records_are_found_by_a_caller_whose_clock_differs(
    redis_url: str, redis_prefix: str
) -> None:
    """Records are filed by the writer's clock: a reader whose clock is behind by up to
    a slice (150 s here) still finds them, and its writes keep one record, not two."""
    ahead = RedisStore(redis_url, prefix=redis_prefix, phone_state_seconds=600)
    behind = RedisStore(redis_url, prefix=redis_prefix, phone_state_seconds=600)
    sync = redis.Redis.from_url(redis_url)
    try:
        now = round(time.time())
        assert isinstance(await ahead.issue(send(ttl_seconds=600), now + 140), Issued)
        attempt = await behind.begin_verify(PHONE, 600, now, Lockout())
        assert (attempt.attempts, attempt.code_hash) == (1, H1)
        held = [k for k in sync.scan_iter(f"{redis_prefix}*") if sync.hexists(k, PHONE)]
        assert len(held) == 1
        assert await behind.consume(PHONE, H1, now) is True
        assert (await ahead.begin_verify(PHONE, 600, now + 140, Lockout())).code_hash is None
    finally:
        sync.close()
        await ahead.close()
        await behind.close()


# -- distinct members (phones per IP) ---------------------------------------------------


def phones_per_ip(phone: str, limit: int = 2) -> DistinctQuota:
    return DistinctQuota("ip_phone_limit", "ip:203.0.113.9", phone, limit, 3600)


async def test_distinct_quota_caps_new_members_only(store) -> None:
    now = time.time()
    for phone in ("+12125550001", "+12125550002"):
        issued = await store.issue(send(phone=phone, distinct=(phones_per_ip(phone),)), now)
        assert isinstance(issued, Issued)
    third = await store.issue(
        send(phone="+12125550003", distinct=(phones_per_ip("+12125550003"),)), now
    )
    assert isinstance(third, Refused)
    assert third.kind == "ip_phone_limit"
    # A phone the IP already used is not a new member: allowed.
    again = await store.issue(
        send(H2, phone="+12125550001", distinct=(phones_per_ip("+12125550001"),)), now
    )
    assert isinstance(again, Issued)
    # Voiding it gives back nothing: the member was there before it.
    await store.void_issue(again.request, again.now)
    fourth = await store.issue(
        send(phone="+12125550004", distinct=(phones_per_ip("+12125550004"),)), now
    )
    assert isinstance(fourth, Refused)


async def test_void_gives_back_a_distinct_slot(store) -> None:
    now = time.time()
    await store.issue(send(phone="+12125550001", distinct=(phones_per_ip("+12125550001"),)), now)
    second = await store.issue(
        send(phone="+12125550002", distinct=(phones_per_ip("+12125550002"),)), now
    )
    assert isinstance(second, Issued)
    await store.void_issue(second.request, second.now)
    third = await store.issue(
        send(phone="+12125550003", distinct=(phones_per_ip("+12125550003"),)), now
    )
    assert isinstance(third, Issued)


# -- surge guard (pumping) ----------------------------------------------------------------


def prefix_guard(key: str = "prefix:1212555", min_sends: int = 3) -> SurgeGuard:
    return SurgeGuard("prefix_blocked", key, min_sends, 5.0, 3600, 6 * 3600)


async def test_surge_blocks_the_scope_and_keeps_it_blocked(store) -> None:
    now = (time.time() // 3600) * 3600 + 5
    for i in range(3):
        issued = await store.issue(send(phone=f"+1212555000{i}", surges=(prefix_guard(),)), now)
        assert isinstance(issued, Issued)
    tripped = await store.issue(send(phone="+12125550009", surges=(prefix_guard(),)), now)
    assert isinstance(tripped, Refused)
    assert tripped.kind == "prefix_blocked"
    assert tripped.retry_after == 6 * 3600
    # Still blocked later, and for a phone never seen before.
    later = await store.issue(send(phone="+12125550008", surges=(prefix_guard(),)), now + 60)
    assert isinstance(later, Refused)
    assert later.kind == "prefix_blocked"
    assert 6 * 3600 - 61 <= later.retry_after <= 6 * 3600 - 59
    # Another scope is untouched.
    other = await store.issue(
        send(phone="+442071838750", surges=(prefix_guard("prefix:4420718"),)), now
    )
    assert isinstance(other, Issued)


async def test_surge_baseline_lets_steady_traffic_through(store) -> None:
    start = (time.time() // 3600) * 3600 - 3600 + 5
    guard = prefix_guard(min_sends=3)
    # Previous window: 3 sends, the most its own (empty) baseline allows.
    for i in range(3):
        assert isinstance(
            await store.issue(send(phone=f"+1212555001{i}", surges=(guard,)), start), Issued
        )
    # This window's allowance is max(3, 5 * 3) = 15 sends.
    now = start + 3600
    results = [
        await store.issue(send(phone=f"+121255502{i:02d}", surges=(guard,)), now) for i in range(16)
    ]
    assert all(isinstance(r, Issued) for r in results[:15])
    assert isinstance(results[15], Refused)


# -- lockout across codes ----------------------------------------------------------------


async def test_lockout_escalates_and_a_success_clears_it(store) -> None:
    lock = Lockout(threshold=3, base_seconds=60, max_seconds=3600, hard_cap=100)
    now = time.time()
    for _ in range(3):
        assert (await store.begin_verify(PHONE, 300, now, lock)).locked_for == 0
    locked = await store.begin_verify(PHONE, 300, now + 1, lock)
    assert 58 <= locked.locked_for <= 60
    assert locked.attempts == 0  # a refused attempt counts nothing
    assert (await store.begin_verify(PHONE, 300, now + 61, lock)).locked_for == 0
    # Fourth failure: the next wait doubles.
    assert 119 <= (await store.begin_verify(PHONE, 300, now + 62, lock)).locked_for <= 120
    # After that wait the phone may try again; a success then wipes the record.
    await store.issue(send(), now + 200)
    attempt = await store.begin_verify(PHONE, 300, now + 200, lock)
    assert (attempt.locked_for, attempt.code_hash) == (0, H1)
    assert await store.consume(PHONE, H1, now + 200) is True
    for _ in range(3):
        assert (await store.begin_verify(PHONE, 300, now + 201, lock)).locked_for == 0
    assert (await store.begin_verify(PHONE, 300, now + 201, lock)).locked_for > 0


async def test_hard_cap_locks_until_the_record_lapses(store) -> None:
    lock = Lockout(threshold=2, base_seconds=1, max_seconds=1, hard_cap=4, memory_seconds=7200)
    now = time.time()
    await store.issue(send(), now)  # failures against a live code are the ones kept long
    t = now
    for _ in range(4):
        attempt = await store.begin_verify(PHONE, 300, t, lock)
        assert attempt.locked_for == 0
        t += 2
    capped = await store.begin_verify(PHONE, 300, t + 3000, lock)
    assert capped.locked_for > 3000


async def test_failures_without_a_code_are_forgotten_with_the_code_ttl(store) -> None:
    """Spraying guesses at random numbers must not fill the store for a month, while
    failures against a live code keep counting long after it expires."""
    lock = Lockout(threshold=3, base_seconds=3600, memory_seconds=30 * 86400)
    past = time.time() - 400  # a code-less record (300 s) lapsed 100 s ago
    other = "+12125550102"
    await store.issue(send(phone=other, ttl_seconds=3600), past)
    for phone in (PHONE, other):
        for _ in range(3):
            assert (await store.begin_verify(phone, 300, past, lock)).locked_for == 0
    now = time.time()
    assert (await store.begin_verify(PHONE, 300, now, lock)).locked_for == 0
    assert (await store.begin_verify(other, 300, now, lock)).locked_for > 3000


# -- verification records ----------------------------------------------------------------


def whole_ms() -> float:
    """Now, in whole milliseconds: the instants Redis keeps (``limits.to_ms``)."""
    return round(time.time() * 1000) / 1000


def opened(verification_id: str = "VE1", **kw: object) -> SendRequest:
    """A send that opens a verification, kept a day past its code."""
    values: dict[str, object] = {
        "verification_id": verification_id,
        "purpose": "login",
        "retention_seconds": 86400,
        "ttl_seconds": 300,
    }
    values.update(kw)
    return send(**values)


async def test_a_send_opens_a_pending_verification_that_holds_no_code(store) -> None:
    now = whole_ms()
    assert isinstance(await store.issue(opened(), now), Issued)
    record = await store.get_verification("VE1", now + 1)
    assert record is not None
    assert (record.id, record.phone, record.status, record.purpose, record.channel) == (
        "VE1",
        PHONE,
        "pending",
        "login",
        "sms",
    )
    assert record.created_at == pytest.approx(now, abs=0.001)
    assert record.expires_at == pytest.approx(now + 300, abs=0.001)
    assert H1 not in repr(record).encode()
    assert await store.get_verification("VE-unknown", now) is None
    # The verify step names the code's verification.
    assert (await store.begin_verify(PHONE, 300, now, LOCK)).verification_id == "VE1"


@pytest.mark.parametrize(
    "vid",
    [
        "VE" + "0123456789abcdef" * 2,  # the service's form: Redis keeps it in 17 bytes
        "VE" + "0123456789ABCDEF" * 2,
        "VE" + "0123456789abcdeg" * 2,
        "VE1",
    ],
)
async def test_a_verification_id_is_kept_as_given(store, vid: str) -> None:
    now = whole_ms()
    assert isinstance(await store.issue(opened(vid), now), Issued)
    assert (await store.begin_verify(PHONE, 300, now, LOCK)).verification_id == vid
    assert await store.consume(PHONE, H1, now + 1, vid) is True
    record = await store.get_verification(vid, now + 2)
    assert record is not None and (record.id, record.status) == (vid, "approved")


async def test_consuming_the_code_approves_its_verification(store) -> None:
    now = whole_ms()
    await store.issue(opened(), now)
    assert await store.consume(PHONE, H1, now + 1, "VE1") is True
    record = await store.get_verification("VE1", now + 2)
    assert record is not None and record.status == "approved"
    assert record.updated_at == pytest.approx(now + 1, abs=0.001)
    # Final: it cannot be canceled any more.
    after = await store.finish_verification("VE1", "canceled", now + 3)
    assert after is not None and after.status == "approved"


async def test_a_canceled_verification_loses_its_code(store) -> None:
    now = whole_ms()
    await store.issue(opened(), now)
    canceled = await store.finish_verification("VE1", "canceled", now + 1)
    assert canceled is not None and canceled.status == "canceled"
    assert (await store.begin_verify(PHONE, 300, now + 2, LOCK)).code_hash is None
    assert await store.consume(PHONE, H1, now + 2, "VE1") is False
    record = await store.get_verification("VE1", now + 3)
    assert record is not None and record.status == "canceled"


async def test_max_attempts_reached_is_final(store) -> None:
    now = whole_ms()
    await store.issue(opened(), now)
    done = await store.finish_verification("VE1", "max_attempts_reached", now + 1)
    assert done is not None and done.status == "max_attempts_reached"
    # The code itself stays (the attempt count refuses it); the record stays final.
    assert await store.consume(PHONE, H1, now + 2, "VE1") is True
    record = await store.get_verification("VE1", now + 3)
    assert record is not None and record.status == "max_attempts_reached"


async def test_a_pending_verification_expires_with_its_code_and_is_kept_for_retention(
    store,
) -> None:
    now = whole_ms()
    await store.issue(opened(), now)
    record = await store.get_verification("VE1", now + 300)
    assert record is not None and record.status == "expired"
    assert (await store.finish_verification("VE1", "canceled", now + 301)).status == "expired"
    # Retention ends a day after the code did (SQLite and memory by the clock given;
    # Redis by its own, so only the stores that take ``now`` are checked there).
    if not isinstance(store, RedisStore):
        assert await store.get_verification("VE1", now + 300 + 86400) is None


async def test_a_newer_send_cancels_the_older_verification(store) -> None:
    now = whole_ms()
    await store.issue(opened("VE1"), now)
    await store.issue(opened("VE2", code_hash=H2), now + 1)
    first = await store.get_verification("VE1", now + 2)
    second = await store.get_verification("VE2", now + 2)
    assert first is not None and first.status == "canceled"
    assert second is not None and second.status == "pending"
    assert (await store.begin_verify(PHONE, 300, now + 2, LOCK)).verification_id == "VE2"


async def test_a_voided_send_leaves_a_failed_verification(store) -> None:
    now = whole_ms()
    issued = await store.issue(opened(cooldown_seconds=60), now)
    assert isinstance(issued, Issued)
    await store.void_issue(issued.request, now)
    record = await store.get_verification("VE1", now + 1)
    assert record is not None and record.status == "failed"
    # ...and, as any void, charges nothing: the next send goes through at once.
    assert isinstance(await store.issue(opened("VE2", code_hash=H2), now + 1), Issued)


# -- a resend that keeps its verification (``SendRequest.resume``) --------------------


def resumed(verification_id: str, code_hash: bytes = H2, **kw: object) -> SendRequest:
    return opened(verification_id, code_hash=code_hash, resume=True, **kw)


async def test_a_resuming_send_continues_the_pending_verification(store) -> None:
    now = whole_ms()
    first = await store.issue(opened("VE1", details='{"service":"VA1"}'), now)
    assert isinstance(first, Issued) and first.verification_id == "VE1"
    again = await store.issue(resumed("VE2", details='{"service":"VA1"}'), now + 60)
    assert isinstance(again, Issued) and again.verification_id == "VE1"
    record = await store.get_verification("VE1", now + 61)
    assert record is not None and record.status == "pending"
    assert record.details == '{"service":"VA1"}'
    assert record.created_at == pytest.approx(now, abs=0.001)
    assert record.updated_at == pytest.approx(now + 60, abs=0.001)
    assert record.expires_at == pytest.approx(now + 360, abs=0.001)  # the new code's
    assert record.send_times == pytest.approx((now, now + 60), abs=0.001)
    assert await store.get_verification("VE2", now + 61) is None  # never opened
    # Only the fresh code checks, and it approves the one verification.
    attempt = await store.begin_verify(PHONE, 300, now + 61, LOCK)
    assert (attempt.code_hash, attempt.verification_id) == (H2, "VE1")
    assert await store.consume(PHONE, H2, now + 62, "VE1") is True
    done = await store.get_verification("VE1", now + 63)
    assert done is not None and done.status == "approved"


@pytest.mark.parametrize(
    "change",
    [
        {"purpose": "transfer"},
        {"details": '{"service":"VA2"}'},
        {"channel": "whatsapp"},
    ],
    ids=["purpose", "details", "channel"],
)
async def test_a_resuming_send_opens_anew_for_another_purpose_details_or_channel(
    store, change: dict[str, str]
) -> None:
    now = whole_ms()
    await store.issue(opened("VE1", details='{"service":"VA1"}'), now)
    values: dict[str, object] = {"details": '{"service":"VA1"}'} | change
    again = await store.issue(resumed("VE2", **values), now + 1)
    assert isinstance(again, Issued) and again.verification_id == "VE2"
    old = await store.get_verification("VE1", now + 2)
    assert old is not None and old.status == "canceled"  # replaced
    new = await store.get_verification("VE2", now + 2)
    assert new is not None and new.status == "pending"
    assert new.created_at == pytest.approx(now + 1, abs=0.001)
    assert new.send_times == pytest.approx((now + 1,), abs=0.001)


@pytest.mark.parametrize("ending", ["canceled", "approved", "max_attempts_reached", "expired"])
async def test_a_resuming_send_opens_anew_once_the_verification_is_over(store, ending: str) -> None:
    now = whole_ms()
    await store.issue(opened("VE1"), now)
    later = now + 1
    if ending == "expired":
        later = now + 300
    else:
        await store.finish_verification("VE1", ending, now)  # type: ignore[arg-type]
    again = await store.issue(resumed("VE2"), later)
    assert isinstance(again, Issued) and again.verification_id == "VE2"
    old = await store.get_verification("VE1", later + 1)
    assert old is not None and old.status == ending


async def test_a_send_without_resume_always_opens_anew(store) -> None:
    now = whole_ms()
    await store.issue(opened("VE1"), now)
    again = await store.issue(opened("VE2", code_hash=H2), now + 1)
    assert isinstance(again, Issued) and again.verification_id == "VE2"


async def test_a_verification_keeps_its_last_send_times(store) -> None:
    now = whole_ms()
    await store.issue(opened("VE1"), now)
    for n in range(1, SENDS_KEPT + 3):
        issued = await store.issue(resumed(f"VE-{n}", code_hash=bytes([n]) * 32), now + n)
        assert isinstance(issued, Issued) and issued.verification_id == "VE1"
    record = await store.get_verification("VE1", now + SENDS_KEPT + 3)
    assert record is not None
    last = SENDS_KEPT + 2
    assert record.send_times == pytest.approx(
        tuple(now + n for n in range(last - SENDS_KEPT + 1, last + 1)), abs=0.001
    )


async def test_a_voided_resend_fails_the_verification_it_continued(store) -> None:
    now = whole_ms()
    await store.issue(opened("VE1", cooldown_seconds=60), now)
    again = await store.issue(resumed("VE2", cooldown_seconds=60), now + 60)
    assert isinstance(again, Issued)
    await store.void_issue(again.request, now + 60)
    record = await store.get_verification("VE1", now + 61)
    assert record is not None and record.status == "failed"
    assert await store.get_verification("VE2", now + 61) is None
    assert (await store.begin_verify(PHONE, 300, now + 61, LOCK)).code_hash is None
    # The resend's cooldown was refunded; the first send's had run out.
    assert isinstance(await store.issue(resumed("VE3", code_hash=H1), now + 61), Issued)


async def test_an_approved_verification_loses_its_code(store) -> None:
    now = whole_ms()
    await store.issue(opened(), now)
    approved = await store.finish_verification("VE1", "approved", now + 1)
    assert approved is not None and approved.status == "approved"
    assert (await store.begin_verify(PHONE, 300, now + 2, LOCK)).code_hash is None
    record = await store.get_verification("VE1", now + 3)
    assert record is not None and record.status == "approved"
