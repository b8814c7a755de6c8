"""The Redis store's connections: order, timeouts, URL options, script cache loss,
and the fallback to redis-py's own client."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.limits import Lockout
from otpgate.domain.ports import Issued, RequestWindow, SendRequest
from otpgate.store.redis import fast_connection
from otpgate.store.redis.client import StockConnection
from otpgate.store.redis.fast_connection import (
    PipelinedConnection,
    RedisConnectionError,
    RedisReplyError,
)
from otpgate.store.redis.store import RedisStore
from otpgate.store.redis.url import parse_redis_url
from otpgate.wiring import build_store
from tests.conftest import make_settings
from tests.redis_server import PrivateRedis

CLIENTS = [pytest.param(True, id="fast"), pytest.param(False, id="stock")]


async def test_replies_match_callers_under_concurrency(redis_url: str, redis_prefix: str) -> None:
    conn = PipelinedConnection(parse_redis_url(redis_url), timeout=2)
    try:
        keys = [f"{redis_prefix}k{i}" for i in range(300)]
        await asyncio.gather(*(conn.execute("SET", k, k) for k in keys))
        values = await asyncio.gather(*(conn.execute("GET", k) for k in keys))
        assert values == [k.encode() for k in keys]
    finally:
        await conn.close()


async def test_error_reply_fails_only_its_caller(redis_url: str, redis_prefix: str) -> None:
    conn = PipelinedConnection(parse_redis_url(redis_url), timeout=2)
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
    conn = PipelinedConnection(parse_redis_url(f"redis://127.0.0.1:{silent_server}/0"), timeout=0.3)
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
    conn = PipelinedConnection(parse_redis_url(f"redis://127.0.0.1:{port}/0"), timeout=0.3)
    with pytest.raises(RedisConnectionError):
        await conn.execute("PING")


async def test_database_index_from_url(redis_url: str, redis_prefix: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    conn = PipelinedConnection(parse_redis_url(f"{base}/3"), timeout=2)
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
        good = PipelinedConnection(
            parse_redis_url(f"redis://:s3cret@127.0.0.1:{server.port}/0"), timeout=2
        )
        assert await good.execute("PING") == b"PONG"
        await good.close()
        bad = PipelinedConnection(parse_redis_url(f"redis://127.0.0.1:{server.port}/0"), timeout=2)
        with pytest.raises(RedisReplyError, match="NOAUTH"):
            await bad.execute("PING")
        await bad.close()
    finally:
        server.stop()


@pytest.mark.parametrize("fast_path", CLIENTS)
async def test_store_survives_a_flushed_script_cache(
    private_redis: PrivateRedis, fast_path: bool
) -> None:
    store = RedisStore(private_redis.url, prefix="t:", fast_path=fast_path)
    window = RequestWindow("w", 100, 60_000)
    try:
        assert (await store.hit_window(window, time.time())).count == 1
        sync = redis.Redis.from_url(private_redis.url)
        sync.script_flush()
        sync.close()
        assert (await store.hit_window(window, time.time())).count == 2
    finally:
        await store.close()


@pytest.mark.parametrize("fast_path", CLIENTS)
async def test_store_unavailable_when_server_stops(
    private_redis: PrivateRedis, fast_path: bool
) -> None:
    store = RedisStore(private_redis.url, prefix="t:", timeout=0.3, fast_path=fast_path)
    try:
        await store.ping()
        private_redis.stop()
        with pytest.raises(StoreUnavailable):
            await store.ping()
        private_redis.start()
        await store.ping()
    finally:
        await store.close()


# -- redis-py's own client: the fallback ------------------------------------------------


def test_fast_path_can_run_on_the_installed_libraries() -> None:
    assert fast_connection.unavailable() is None


async def test_store_falls_back_to_redis_py_when_the_fast_path_cannot_run(
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(fast_connection, "unavailable", lambda: "hiredis 9.9 has no Reader")
    with caplog.at_level(logging.WARNING, logger="otpgate"):
        store = RedisStore(redis_url, prefix=redis_prefix)
        try:
            assert isinstance(store._conn, StockConnection)
            now = time.time()
            phone, code_hash = "+12125550177", b"\x07" * 32
            request = SendRequest(
                phone, code_hash, ttl_seconds=300, cooldown_seconds=0, send_id="fallback"
            )
            assert isinstance(await store.issue(request, now), Issued)
            attempt = await store.begin_verify(phone, 300, now, Lockout())
            assert (attempt.attempts, attempt.code_hash) == (1, code_hash)
            assert await store.consume(phone, code_hash, now) is True
            await store.ping()
        finally:
            await store.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "hiredis 9.9 has no Reader" in warnings[0].getMessage()


@pytest.mark.parametrize("fast_path", [True, False])
async def test_wiring_passes_the_fast_path_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    def check() -> str | None:
        assert fast_path, "unavailable() consulted with FAST_PATH=false"
        return None

    monkeypatch.setattr(fast_connection, "unavailable", check)
    settings = make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0", fast_path=fast_path)
    store = build_store(settings)
    try:
        assert isinstance(store, RedisStore)
        assert isinstance(store._conn, PipelinedConnection if fast_path else StockConnection)
    finally:
        await store.close()


async def test_stock_client_refused_connection_is_unavailable_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.3, fast_path=False)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.hit_window(RequestWindow("w", 5, 60_000), time.time())
        assert time.monotonic() - started < 2
    finally:
        await store.close()


async def test_stock_client_stuck_server_times_out(silent_server: int) -> None:
    store = RedisStore(f"redis://127.0.0.1:{silent_server}/0", timeout=0.3, fast_path=False)
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(store.ping() for _ in range(5)), return_exceptions=True)
        elapsed = time.monotonic() - started
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert elapsed < 3, elapsed
    finally:
        await store.close()
