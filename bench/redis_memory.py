"""Redis memory per pending code, per verification and per guess at a code-less number.

Each is measured as the INFO ``used_memory`` delta over N of them in an empty Redis,
divided by N, written through otpgate's own RedisStore (the scripts the service
runs) with the default settings:

- ``otpgate``: what a send keeps per phone: the phone's record (code HMAC, attempts,
  resend cooldown, the phone's send log), as a send with the default per-number
  quota writes it, without a verification;
- ``otpgate_verification``: the same send opening its verification, the record
  ``GET /api/v1/verifications/{id}`` reads (kept a day after the code by default);
- ``otpgate_guess``: one wrong-code verify at a number that has no code (the
  attempts and failures that keep its answers alike those of a number with one);
- ``node``: the Node service's store, ``SET otp:<phone> <code> EX <ttl>``, issued
  directly rather than through N HTTP requests.

The budgets, the phones-per-IP sets and the range statistics are shared by many
phones and left out: their cost does not grow with the number of pending codes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from bench import phones
from bench.services import Redis

BATCH = 64  # in flight: redis-py 8 refuses more than 100 connections per pool


async def _through_store(
    url: str, count: int, step: Callable[[Any, str, float], Coroutine[Any, Any, Any]]
) -> None:
    from otpgate.domain.limits import AbusePolicy
    from otpgate.domain.policy import OtpPolicy
    from otpgate.store.redis.store import RedisStore

    limits, policy = AbusePolicy(), OtpPolicy()
    lives = (policy.ttl_seconds, limits.resend_cooldown_seconds, limits.phone_window_seconds)
    store = RedisStore(url, prefix="otpgate:", timeout=5.0, phone_state_seconds=max(lives))
    now = time.time()
    try:
        for start in range(0, count, BATCH):
            batch = range(start, min(count, start + BATCH))
            await asyncio.gather(*(step(store, phones.phone_at(i), now) for i in batch))
    finally:
        await store.close()


def _send(with_verification: bool) -> Callable[[Any, str, float], Coroutine[Any, Any, Any]]:
    async def step(store: Any, phone: str, now: float) -> None:
        from otpgate.domain.limits import AbusePolicy, Quota
        from otpgate.domain.policy import OtpPolicy
        from otpgate.domain.ports import SendRequest

        limits, policy = AbusePolicy(), OtpPolicy()
        quota = Quota("phone_send_limit", phone, limits.phone_sends, limits.phone_window_seconds)
        request = SendRequest(
            phone,
            secrets.token_bytes(32),
            policy.ttl_seconds,
            limits.resend_cooldown_seconds,
            (quota,),
            send_id=uuid.uuid4().hex,
            verification_id=f"VE{uuid.uuid4().hex}" if with_verification else "",
            retention_seconds=policy.verification_retention_seconds,
        )
        await store.issue(request, now)

    return step


async def _guess(store: Any, phone: str, now: float) -> None:
    from otpgate.domain.limits import AbusePolicy
    from otpgate.domain.policy import OtpPolicy

    await store.begin_verify(phone, OtpPolicy().ttl_seconds, now, AbusePolicy().lockout)


def _issue_node(redis: Redis, count: int) -> None:
    pipe = redis.client.pipeline(transaction=False)
    for index in range(count):
        pipe.set(f"otp:{phones.phone_at(index)}", f"{secrets.randbelow(900000) + 100000}", ex=300)
        if index % 1000 == 999:
            pipe.execute()
    pipe.execute()


def _measure(redis: Redis, count: int, fill: Callable[[], None]) -> dict[str, float]:
    redis.flush()
    before = redis.used_memory()
    fill()
    after = redis.used_memory()
    keys = redis.keys()
    redis.flush()
    return {
        "bytes_per_code": (after - before) / count,
        "keys_per_code": keys / count,
        "used_memory_delta": after - before,
    }


def measure(redis: Redis, count: int) -> dict[str, dict[str, float]]:
    url = redis.url(0)

    def through(step: Callable[[Any, str, float], Coroutine[Any, Any, Any]]) -> Callable[[], None]:
        return lambda: asyncio.run(_through_store(url, count, step))

    return {
        "otpgate": _measure(redis, count, through(_send(False))),
        "otpgate_verification": _measure(redis, count, through(_send(True))),
        "otpgate_guess": _measure(redis, count, through(_guess)),
        "node": _measure(redis, count, lambda: _issue_node(redis, count)),
    }
