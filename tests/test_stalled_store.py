"""A store that stalls (paused, not down) while a send is being issued.

The send step times out and the client gets 503; the stalled Redis still holds the
script and runs it when it resumes. Nothing of that send may stay behind: the
same phone asks again at once and gets its SMS, and the store shows one send's
charges, not two.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from otpgate.domain.limits import Quota
from tests.conftest import Service, ServiceFactory
from tests.fakes import CapturingSender
from tests.redis_server import PrivateRedis

# The store under test is the private Redis each test pauses; no other store runs.
pytestmark = pytest.mark.parametrize("store_kind", ["sqlite"], ids=["-"], indirect=True)

PHONE = "+12125550188"
OTHER = "+12125550199"
PREFIX = "stall:"


def _keys(server: PrivateRedis) -> dict[str, object]:
    """Every key under the prefix with what it holds, for counting charges."""
    client = redis.Redis(port=server.port)
    try:
        held: dict[str, object] = {}
        for raw in client.scan_iter(match=f"{PREFIX}*"):
            key, kind = raw.decode(), client.type(raw).decode()
            if kind == "string":
                held[key] = client.get(raw).decode()  # type: ignore[union-attr]
            elif kind == "zset":
                held[key] = client.zrange(raw, 0, -1)
            elif kind == "set":
                held[key] = client.smembers(raw)
            elif kind == "hash":
                held[key] = client.hgetall(raw)
        return held
    finally:
        client.close()


async def _warm_up(svc: Service) -> None:
    """One send to another phone first, as in a running service: the server has
    accepted the connection and cached the script, so a stalled Redis holds the
    send's script in that connection's buffer and runs it when it resumes."""
    r = await svc.request(OTHER)
    assert r.status_code == 200, r.text


async def _stalled_send(svc: Service, server: PrivateRedis) -> None:
    server.pause()
    try:
        r = await svc.request(PHONE)
    finally:
        server.resume()
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "store_unavailable"


async def _make(make_service: ServiceFactory, server: PrivateRedis, fast_path: bool) -> Service:
    return await make_service(
        redis_url=server.url,
        redis_key_prefix=PREFIX,
        redis_timeout_seconds=0.3,
        rate_limit_max_requests=100,
        otp_resend_cooldown_seconds=60,
        fast_path=fast_path,
    )


def _charges(held: dict[str, object]) -> dict[str, object]:
    """What counts against a limit: not the request windows, the void marks or the
    verification records (the stalled send's says "failed", if its step ran)."""
    return {k: v for k, v in held.items() if not k.endswith((":w", ":ver")) and ":void:" not in k}


async def test_a_send_stalled_in_the_store_leaves_nothing_and_the_retry_gets_its_sms(
    make_service: ServiceFactory, private_redis: PrivateRedis, fast_path: bool
) -> None:
    svc = await _make(make_service, private_redis, fast_path)
    await _warm_up(svc)
    await _stalled_send(svc, private_redis)

    r = await svc.request(PHONE)  # at once: no cooldown left by the stalled step
    assert r.status_code == 200, r.text
    sender = svc.components.sender
    assert isinstance(sender, CapturingSender)
    code = sender.last_code(PHONE)
    assert [to for to, _ in sender.sent] == [OTHER, PHONE]

    held = _keys(private_redis)
    # Two sends' charges (the warm-up's and the retry's), not three: two codes, two
    # cooldowns, one send in each phone's log, every shared counter at two. At most
    # a mark remains of the stalled send (if it was voided before it ran).
    for phone in (PHONE, OTHER):
        sends = Quota("phone_send_limit", phone, 5, 600)  # the PHONE_SEND_* defaults
        state = await svc.components.store.phone_state(phone, time.time(), sends)
        assert state.code_pending and state.cooldown_until is not None, state
        assert state.sends_in_window == 1, state
    counters = {k: v for k, v in held.items() if ":s:" in k or ":q:" in k}
    assert counters and set(counters.values()) == {"2"}, counters
    assert len([k for k in held if ":void:" in k]) <= 1

    ok = await svc.verify(PHONE, code)
    assert ok.status_code == 200, ok.text


async def test_a_stalled_send_is_voided_once_the_store_answers_without_a_retry(
    make_service: ServiceFactory, private_redis: PrivateRedis, fast_path: bool
) -> None:
    svc = await _make(make_service, private_redis, fast_path)
    await _warm_up(svc)
    before = _charges(_keys(private_redis))
    await _stalled_send(svc, private_redis)

    voids = svc.components.service.pending_voids
    deadline = time.monotonic() + 10
    while len(voids) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # polling a condition, bounded
    assert len(voids) == 0, "the stalled send was never voided"
    assert _charges(_keys(private_redis)) == before
