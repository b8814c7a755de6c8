"""Redis store: each operation is one Lua script, so one atomic round trip.

Key layout (``P`` is REDIS_KEY_PREFIX): every key of one phone carries the
phone in a ``{hash tag}``, so they share one Redis Cluster slot and one script
may touch them all.

- ``P{+15551234567}:code``       hash ``h`` (HMAC of the code), ``a`` (attempts); TTL = code TTL
- ``P{+15551234567}:cd``         resend cooldown: its end (ms epoch); expires then
- ``P{<scope>}:q:<kind>:<n>``    sliding-window counter for window ``n``
- ``P{<key>}:w``                 fixed-window request counter
"""

from __future__ import annotations

import logging
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from otpgate.domain.errors import StoreUnavailable
from otpgate.store.base import (
    Attempt,
    Issued,
    Refused,
    SendRequest,
    WindowHit,
    seconds_until_allowed,
    window_index,
)

log = logging.getLogger(__name__)

# KEYS: code, cooldown, then (previous, current) window keys per quota.
# ARGV: hash, ttl_ms, cooldown_ms, now_ms, then (limit, window_ms) per quota.
# Expiry is absolute, from the caller's clock, like the SQLite store's.
# Returns {0} when issued, {1, pttl} for the cooldown, {2, i, prev, cur} for quota i.
_ISSUE = """
local now = tonumber(ARGV[4])
local cd = tonumber(redis.call('GET', KEYS[2]) or '0')
if cd > now then return {1, cd - now} end
local n = (#KEYS - 2) / 2
for i = 1, n do
  local prev = tonumber(redis.call('GET', KEYS[1 + 2 * i]) or '0')
  local cur = tonumber(redis.call('GET', KEYS[2 + 2 * i]) or '0')
  local limit = tonumber(ARGV[3 + 2 * i])
  local win = tonumber(ARGV[4 + 2 * i])
  local elapsed = (now % win) / win
  if prev * (1 - elapsed) + cur + 1 > limit then return {2, i, prev, cur} end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'a', 0)
redis.call('PEXPIREAT', KEYS[1], now + tonumber(ARGV[2]))
if tonumber(ARGV[3]) > 0 then
  local until_ms = now + tonumber(ARGV[3])
  redis.call('SET', KEYS[2], until_ms, 'PXAT', until_ms)
end
for i = 1, n do
  local win = tonumber(ARGV[4 + 2 * i])
  redis.call('INCR', KEYS[2 + 2 * i])
  redis.call('PEXPIREAT', KEYS[2 + 2 * i], (math.floor(now / win) + 2) * win)
end
return {0}
"""

# KEYS: code, cooldown, then the charged window keys. ARGV: hash.
_UNDO = """
if redis.call('HGET', KEYS[1], 'h') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
for i = 3, #KEYS do
  if redis.call('DECR', KEYS[i]) <= 0 then redis.call('DEL', KEYS[i]) end
end
return 1
"""

# KEYS: code. ARGV: expiry (ms epoch) for a record created by a guess at a phone
# with no code. The attempt is counted before the caller compares anything.
_BEGIN_VERIFY = """
local a = redis.call('HINCRBY', KEYS[1], 'a', 1)
local h = redis.call('HGET', KEYS[1], 'h')
if (not h) and a == 1 then redis.call('PEXPIREAT', KEYS[1], ARGV[1]) end
return {a, h or false}
"""

# KEYS: code. ARGV: hash.
_CONSUME = """
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS: counter. ARGV: window_ms.
_HIT_WINDOW = """
local c = redis.call('INCR', KEYS[1])
local t = redis.call('PTTL', KEYS[1])
if t < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  t = tonumber(ARGV[1])
end
return {c, t}
"""


class RedisStore:
    def __init__(self, url: str, *, prefix: str = "otpgate:", timeout: float = 0.5) -> None:
        self._prefix = prefix
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            retry_on_timeout=False,
            health_check_interval=30,
            decode_responses=False,
        )
        self._issue = self._client.register_script(_ISSUE)
        self._undo = self._client.register_script(_UNDO)
        self._begin_verify = self._client.register_script(_BEGIN_VERIFY)
        self._consume = self._client.register_script(_CONSUME)
        self._hit_window = self._client.register_script(_HIT_WINDOW)

    # -- keys --------------------------------------------------------------------------
    def _code_key(self, phone: str) -> str:
        return f"{self._prefix}{{{phone}}}:code"

    def _cooldown_key(self, phone: str) -> str:
        return f"{self._prefix}{{{phone}}}:cd"

    def _window_key(self, kind: str, scope: str, index: int) -> str:
        return f"{self._prefix}{{{scope}}}:q:{kind}:{index}"

    # -- operations --------------------------------------------------------------------
    async def issue(self, request: SendRequest, now: float) -> Issued | Refused:
        keys = [self._code_key(request.phone), self._cooldown_key(request.phone)]
        args: list[Any] = [
            request.code_hash,
            request.ttl_seconds * 1000,
            request.cooldown_seconds * 1000,
            int(now * 1000),
        ]
        for quota in request.quotas:
            idx = window_index(now, quota.window_seconds)
            keys += [
                self._window_key(quota.kind, quota.key, idx - 1),
                self._window_key(quota.kind, quota.key, idx),
            ]
            args += [quota.limit, quota.window_seconds * 1000]
        reply = await self._run(self._issue, keys, args)
        if reply[0] == 0:
            return Issued(request=request, now=now)
        if reply[0] == 1:
            return Refused("resend_cooldown", max(1, -(-int(reply[1]) // 1000)))
        quota = request.quotas[int(reply[1]) - 1]
        retry = seconds_until_allowed(
            int(reply[2]), int(reply[3]), quota.limit, now, quota.window_seconds
        )
        return Refused(quota.kind, retry)

    async def undo_issue(self, issued: Issued) -> None:
        request = issued.request
        keys = [self._code_key(request.phone), self._cooldown_key(request.phone)]
        keys += [
            self._window_key(q.kind, q.key, window_index(issued.now, q.window_seconds))
            for q in request.quotas
        ]
        await self._run(self._undo, keys, [request.code_hash])

    async def begin_verify(self, phone: str, ttl_seconds: int, now: float) -> Attempt:
        reply = await self._run(
            self._begin_verify, [self._code_key(phone)], [int((now + ttl_seconds) * 1000)]
        )
        return Attempt(attempts=int(reply[0]), code_hash=reply[1] or None)

    async def consume(self, phone: str, code_hash: bytes, now: float) -> bool:
        return bool(await self._run(self._consume, [self._code_key(phone)], [code_hash]))

    async def hit_window(self, key: str, window_ms: int, now: float) -> WindowHit:
        reply = await self._run(self._hit_window, [f"{self._prefix}{{{key}}}:w"], [window_ms])
        return WindowHit(count=int(reply[0]), reset_after_ms=int(reply[1]))

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable() from exc

    async def close(self) -> None:
        await self._client.aclose()

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return cast(Any, await script(keys=keys, args=args))
        except (RedisError, OSError) as exc:
            log.warning("redis store unavailable: %s", type(exc).__name__)
            raise StoreUnavailable() from exc
