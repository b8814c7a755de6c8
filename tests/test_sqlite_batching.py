"""The SQLite store batches operations into transactions; each must stay atomic alone."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.limits import Quota
from otpgate.domain.ports import Issued, Refused, SendRequest
from otpgate.store.sqlite import SqliteStore


def send(phone: str, limit: int) -> SendRequest:
    return SendRequest(
        phone=phone,
        code_hash=b"\x01" * 32,
        ttl_seconds=300,
        cooldown_seconds=0,
        quotas=(Quota("global_budget", "global", limit, 3600),),
        send_id=uuid.uuid4().hex,
    )


async def test_two_stores_on_one_file_never_exceed_a_shared_limit(tmp_path: Path) -> None:
    """Two workers' stores, many concurrent sends: the budget is exact across both."""
    path = tmp_path / "shared.sqlite3"
    first, second = SqliteStore(path), SqliteStore(path)
    now = time.time()
    try:
        outcomes = await asyncio.gather(
            *(
                (first if i % 2 else second).issue(send(f"+1212555{i:04d}", limit=150), now)
                for i in range(400)
            )
        )
    finally:
        await first.close()
        await second.close()
    refused = [o for o in outcomes if not isinstance(o, Issued)]
    assert len(refused) == 250
    assert all(isinstance(o, Refused) and o.kind == "global_budget" for o in refused)


async def test_an_operation_that_fails_rolls_back_alone(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")

    def write_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO counters (key, count, expires_at) VALUES ('half', 1, 9e9)")
        raise RuntimeError("a bug halfway through")

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO counters (key, count, expires_at) VALUES ('whole', 1, 9e9)")

    def keys(conn: sqlite3.Connection) -> list[str]:
        return [row[0] for row in conn.execute("SELECT key FROM counters ORDER BY key")]

    try:
        # Queued in one turn of the loop, so they share a batch.
        failed, ok = await asyncio.gather(
            store._call(write_then_fail), store._call(write), return_exceptions=True
        )
        assert isinstance(failed, RuntimeError) and ok is None
        assert await store._call(keys) == ["whole"]
    finally:
        await store.close()


async def test_a_locked_file_answers_store_unavailable_in_bounded_time(tmp_path: Path) -> None:
    """Another process holding the write lock past the timeout: a 503, not a hang."""
    path = tmp_path / "db.sqlite3"
    store = SqliteStore(path, busy_timeout_ms=300)
    await store.ping()  # creates the file and the schema
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable):
            await store.issue(send("+12125550100", limit=10), time.time())
        assert time.monotonic() - started < 2
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert isinstance(await store.issue(send("+12125550100", limit=10), time.time()), Issued)
    await store.close()
