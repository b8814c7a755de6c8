"""The stock way to Redis: redis-py's own asyncio client, behind the store's RedisLink.

It costs more CPU per call than ``redis_connection`` (a connection pool and
redis-py's command layer) but uses only redis-py's public API. The store uses it
with FAST_PATH=false, or when ``redis_connection.unavailable()`` says the
installed redis-py or hiredis lacks what the fast connection reaches into.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from otpgate.store.redis_link import RedisConnectionError, RedisReplyError


class StockConnection:
    def __init__(self, url: str, *, timeout: float) -> None:
        # No retries: with Redis down the store must answer StoreUnavailable within
        # the timeout, as the fast connection does (redis-py's default would retry
        # ten times with backoff).
        self._client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    async def execute(self, *args: Any) -> Any:
        try:
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        except NoScriptError as exc:
            # redis-py strips the error code from the message; the store reads it.
            raise RedisReplyError(f"NOSCRIPT {exc}") from exc
        except ResponseError as exc:
            raise RedisReplyError(str(exc)) from exc
        except (RedisPyConnectionError, RedisPyTimeoutError) as exc:
            raise RedisConnectionError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()
