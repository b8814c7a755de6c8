"""Redis memory per pending code: what holding N unverified codes costs.

Measured as the INFO ``used_memory`` delta over N codes in an empty Redis,
divided by N.

- otpgate: written through its own RedisStore.issue (the same Lua script the
  service runs), once with no quota (code hash + resend-cooldown marker, as
  asked of the store directly) and once with the per-number send quota the
  service charges on every send (one more key per number: the sorted set that
  logs the number's recent sends).
- Node: its store is ``SET otp:<phone> <code> EX <ttl>``; the same command is
  issued here directly rather than through 100,000 HTTP requests.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from bench import phones
from bench.services import Redis

BATCH = 64  # issues in flight: redis-py 8 refuses more than 100 connections per pool


async def _issue_otpgate(url: str, count: int, with_quota: bool) -> None:
    from otpgate.domain.limits import Quota
    from otpgate.domain.ports import SendRequest
    from otpgate.store.redis import RedisStore

    store = RedisStore(url, prefix="otpgate:", timeout=5.0)
    now = time.time()

    async def one(index: int) -> None:
        phone = phones.phone_at(index)
        quotas = (Quota("phone_send_limit", phone, 5, 600),) if with_quota else ()
        request = SendRequest(
            phone, secrets.token_bytes(32), 300, 60, quotas, send_id=secrets.token_hex(16)
        )
        await store.issue(request, now)

    try:
        for start in range(0, count, BATCH):
            await asyncio.gather(*(one(i) for i in range(start, min(count, start + BATCH))))
    finally:
        await store.close()


def _issue_node(redis: Redis, count: int) -> None:
    pipe = redis.client.pipeline(transaction=False)
    for index in range(count):
        pipe.set(f"otp:{phones.phone_at(index)}", f"{secrets.randbelow(900000) + 100000}", ex=300)
        if index % 1000 == 999:
            pipe.execute()
    pipe.execute()


def _measure(redis: Redis, count: int, fill: Any) -> dict[str, float]:
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
    return {
        "otpgate": _measure(redis, count, lambda: asyncio.run(_issue_otpgate(url, count, False))),
        "otpgate_with_send_quota": _measure(
            redis, count, lambda: asyncio.run(_issue_otpgate(url, count, True))
        ),
        "node": _measure(redis, count, lambda: _issue_node(redis, count)),
    }
