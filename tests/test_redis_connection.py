"""The pipelined Redis connection: order, timeouts, URL options, script cache loss."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.ports import RequestWindow
from otpgate.store.redis import RedisStore
from otpgate.store.redis_connection import (
    PipelinedConnection,
    RedisConnectionError,
    RedisReplyError,
)
from tests.redis_server import PrivateRedis


async def test_replies_match_callers_under_concurrency(redis_url: str, redis_prefix: str) -> None:
    conn = PipelinedConnection(redis_url, timeout=2)
    try:
        keys = [f"{redis_prefix}k{i}" for i in range(300)]
        await asyncio.gather(*(conn.execute("SET", k, k) for k in keys))
        values = await asyncio.gather(*(conn.execute("GET", k) for k in keys))
        assert values == [k.encode() for k in keys]
    finally:
        await conn.close()


async def test_error_reply_fails_only_its_caller(redis_url: str, redis_prefix: str) -> None:
    conn = PipelinedConnection(redis_url, timeout=2)
    try:
        key = f"{redis_prefix}s"
        await conn.execute("SET", key, "text")
        results = await asyncio.gather(
            conn.execute("INCR", key), conn.execute("GET", key), return_exceptions=True
        )
        assert isinstance(results[0], RedisReplyError)
        assert results[1] == b"text"
    finally:
        await conn.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers: a stuck Redis."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for s in held:
            s.close()
        server.close()


async def test_stuck_server_times_out(silent_server: int) -> None:
    conn = PipelinedConnection(f"redis://127.0.0.1:{silent_server}/0", timeout=0.3)
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(conn.execute("PING") for _ in range(20)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
        assert all(isinstance(r, RedisConnectionError) for r in results)
        assert elapsed < 3, elapsed
    finally:
        await conn.close()


async def test_refused_connection_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = PipelinedConnection(f"redis://127.0.0.1:{port}/0", timeout=0.3)
    with pytest.raises(RedisConnectionError):
        await conn.execute("PING")


async def test_database_index_from_url(redis_url: str, redis_prefix: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    conn = PipelinedConnection(f"{base}/3", timeout=2)
    sync = redis.Redis.from_url(f"{base}/3")
    key = f"{redis_prefix}db3"
    try:
        await conn.execute("SET", key, "here")
        assert sync.get(key) == b"here"
    finally:
        sync.delete(key)
        sync.close()
        await conn.close()


@pytest.mark.integration
async def test_password_from_url(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, "--requirepass", "s3cret")
    server.start()
    try:
        good = PipelinedConnection(f"redis://:s3cret@127.0.0.1:{server.port}/0", timeout=2)
        assert await good.execute("PING") == b"PONG"
        await good.close()
        bad = PipelinedConnection(f"redis://127.0.0.1:{server.port}/0", timeout=2)
        with pytest.raises(RedisReplyError, match="NOAUTH"):
            await bad.execute("PING")
        await bad.close()
    finally:
        server.stop()


async def test_store_survives_a_flushed_script_cache(private_redis: PrivateRedis) -> None:
    store = RedisStore(private_redis.url, prefix="t:")
    window = RequestWindow("w", 100, 60_000)
    try:
        assert (await store.hit_window(window, time.time())).count == 1
        sync = redis.Redis.from_url(private_redis.url)
        sync.script_flush()
        sync.close()
        assert (await store.hit_window(window, time.time())).count == 2
    finally:
        await store.close()


async def test_store_unavailable_when_server_stops(private_redis: PrivateRedis) -> None:
    store = RedisStore(private_redis.url, prefix="t:", timeout=0.3)
    try:
        await store.ping()
        private_redis.stop()
        with pytest.raises(StoreUnavailable):
            await store.ping()
        private_redis.start()
        await store.ping()
    finally:
        await store.close()
