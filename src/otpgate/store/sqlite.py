"""Embedded SQLite store: the zero-dependency default, one file on disk.

Every operation runs as one transaction (``BEGIN IMMEDIATE``) on a private
thread, so it is atomic within a process, and SQLite's file lock makes it
atomic across the workers that open the same file. WAL mode lets readers and
the single writer overlap; ``busy_timeout`` bounds how long a worker waits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from otpgate.domain.errors import StoreUnavailable
from otpgate.store.base import (
    Attempt,
    Issued,
    Refused,
    SendRequest,
    WindowHit,
    seconds_until_allowed,
    sliding_count,
    window_index,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS codes (
    phone      TEXT PRIMARY KEY,
    code_hash  BLOB,
    attempts   INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    key        TEXT PRIMARY KEY,
    count      INTEGER NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""

_PURGE_EVERY_SECONDS = 60.0


class SqliteStore:
    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 2000) -> None:
        self._path = str(path)
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = busy_timeout_ms
        # One thread owns the connection: sqlite3 objects are not shared across threads,
        # and serialising our own transactions here keeps the file lock short.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otpgate-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._next_purge = 0.0

    # -- plumbing ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            conn = self._connect()
            self._maybe_purge(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except sqlite3.Error as exc:
            log.warning("sqlite store unavailable: %s", type(exc).__name__)
            raise StoreUnavailable() from exc

    def _maybe_purge(self, conn: sqlite3.Connection) -> None:
        now = time.time()
        if now < self._next_purge:
            return
        self._next_purge = now + _PURGE_EVERY_SECONDS
        conn.execute("DELETE FROM codes WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))

    @staticmethod
    def _counter(conn: sqlite3.Connection, key: str, now: float) -> int:
        row = conn.execute(
            "SELECT count FROM counters WHERE key = ? AND expires_at > ?", (key, now)
        ).fetchone()
        return int(row[0]) if row else 0

    # -- operations --------------------------------------------------------------------
    async def issue(self, request: SendRequest, now: float) -> Issued | Refused:
        def tx(conn: sqlite3.Connection) -> Issued | Refused:
            row = conn.execute(
                "SELECT expires_at FROM counters WHERE key = ? AND expires_at > ?",
                (_cooldown_key(request.phone), now),
            ).fetchone()
            if row:
                return Refused("resend_cooldown", max(1, math.ceil(row[0] - now)))
            for quota in request.quotas:
                idx = window_index(now, quota.window_seconds)
                prev = self._counter(conn, _window_key(quota.kind, quota.key, idx - 1), now)
                cur = self._counter(conn, _window_key(quota.kind, quota.key, idx), now)
                if sliding_count(prev, cur, now, quota.window_seconds) + 1 > quota.limit:
                    retry = seconds_until_allowed(prev, cur, quota.limit, now, quota.window_seconds)
                    return Refused(quota.kind, retry)
            conn.execute(
                "INSERT OR REPLACE INTO codes (phone, code_hash, attempts, expires_at)"
                " VALUES (?, ?, 0, ?)",
                (request.phone, request.code_hash, now + request.ttl_seconds),
            )
            if request.cooldown_seconds > 0:
                conn.execute(
                    "INSERT OR REPLACE INTO counters (key, count, expires_at) VALUES (?, 1, ?)",
                    (_cooldown_key(request.phone), now + request.cooldown_seconds),
                )
            for quota in request.quotas:
                idx = window_index(now, quota.window_seconds)
                expires = (idx + 2) * quota.window_seconds
                conn.execute(
                    "INSERT INTO counters (key, count, expires_at) VALUES (?, 1, ?)"
                    " ON CONFLICT(key) DO UPDATE SET count = CASE WHEN expires_at <= ?"
                    " THEN 1 ELSE count + 1 END, expires_at = excluded.expires_at",
                    (_window_key(quota.kind, quota.key, idx), expires, now),
                )
            return Issued(request=request, now=now)

        return await self._call(tx)

    async def undo_issue(self, issued: Issued) -> None:
        request = issued.request

        def tx(conn: sqlite3.Connection) -> None:
            deleted = conn.execute(
                "DELETE FROM codes WHERE phone = ? AND code_hash = ?",
                (request.phone, request.code_hash),
            ).rowcount
            if not deleted:
                return  # a newer send replaced it: its charges are not ours to refund
            conn.execute("DELETE FROM counters WHERE key = ?", (_cooldown_key(request.phone),))
            for quota in request.quotas:
                key = _window_key(
                    quota.kind, quota.key, window_index(issued.now, quota.window_seconds)
                )
                conn.execute("UPDATE counters SET count = count - 1 WHERE key = ?", (key,))
                conn.execute("DELETE FROM counters WHERE key = ? AND count <= 0", (key,))

        await self._call(tx)

    async def begin_verify(self, phone: str, ttl_seconds: int, now: float) -> Attempt:
        def tx(conn: sqlite3.Connection) -> Attempt:
            # An expired row starts over as "no code", so a guess at an expired code
            # counts like a guess at a phone that never had one.
            row = conn.execute(
                "INSERT INTO codes (phone, code_hash, attempts, expires_at) VALUES (?, NULL, 1, ?)"
                " ON CONFLICT(phone) DO UPDATE SET"
                " code_hash = CASE WHEN expires_at <= ? THEN NULL ELSE code_hash END,"
                " attempts = CASE WHEN expires_at <= ? THEN 1 ELSE attempts + 1 END,"
                " expires_at = CASE WHEN expires_at <= ? THEN excluded.expires_at"
                " ELSE expires_at END"
                " RETURNING attempts, code_hash",
                (phone, now + ttl_seconds, now, now, now),
            ).fetchone()
            return Attempt(attempts=int(row[0]), code_hash=row[1])

        return await self._call(tx)

    async def consume(self, phone: str, code_hash: bytes, now: float) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "DELETE FROM codes WHERE phone = ? AND code_hash = ? AND expires_at > ?",
                    (phone, code_hash, now),
                ).rowcount
                == 1
            )

        return await self._call(tx)

    async def hit_window(self, key: str, window_ms: int, now: float) -> WindowHit:
        def tx(conn: sqlite3.Connection) -> WindowHit:
            row = conn.execute(
                "INSERT INTO counters (key, count, expires_at) VALUES (?, 1, ?)"
                " ON CONFLICT(key) DO UPDATE SET"
                " count = CASE WHEN expires_at <= ? THEN 1 ELSE count + 1 END,"
                " expires_at = CASE WHEN expires_at <= ? THEN excluded.expires_at"
                " ELSE expires_at END"
                " RETURNING count, expires_at",
                (f"w:{key}", now + window_ms / 1000, now, now),
            ).fetchone()
            return WindowHit(count=int(row[0]), reset_after_ms=max(0, int((row[1] - now) * 1000)))

        return await self._call(tx)

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)


def _cooldown_key(phone: str) -> str:
    return f"cd:{phone}"


def _window_key(kind: str, scope: str, index: int) -> str:
    return f"q:{kind}:{scope}:{index}"
