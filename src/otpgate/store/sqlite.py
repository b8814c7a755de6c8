"""Embedded SQLite store: the zero-dependency default, one file on disk.

Every operation runs as one transaction (``BEGIN IMMEDIATE``) on a private
thread, so it is atomic within a process, and SQLite's file lock makes it
atomic across the workers that open the same file. WAL mode lets readers and
the single writer overlap; ``busy_timeout`` bounds how long a worker waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.events import EVENT_NAMES, block_data, verification_data
from otpgate.domain.limits import (
    DAY_BUCKETS_KEPT,
    HOUR,
    RANGE_DENIED,
    STAT_BUCKET_SECONDS,
    STAT_BUCKETS_KEPT,
    ConversionGuard,
    Lockout,
    Quota,
    SurgeGuard,
    bucket_index,
    bucket_leaves,
    buckets_counted,
    buckets_wait,
    day_bucket,
    log_wait,
    retry_seconds,
    seconds_until_window_ends,
    settled_buckets,
    stat_bucket,
    to_ms,
    window_index,
)
from otpgate.domain.ports import (
    SENDS_KEPT,
    Attempt,
    Block,
    Event,
    Issued,
    OverrideList,
    PhoneState,
    RangeStats,
    Refused,
    RequestWindow,
    SendRequest,
    Verification,
    VerificationStatus,
    WindowHit,
)
from otpgate.observability.outage import OutageLog

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS codes (
    phone       TEXT PRIMARY KEY,
    code_hash   BLOB,
    attempts    INTEGER NOT NULL DEFAULT 0,
    expires_at  REAL NOT NULL,
    send_id     TEXT,             -- the send that stored the code
    new_members TEXT,             -- per distinct quota, '1' if that send added its member
    verification_id TEXT,
    sent_at     REAL              -- when the send was charged (its range buckets)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verifications (
    id         TEXT PRIMARY KEY,
    phone      TEXT NOT NULL,
    status     TEXT NOT NULL,
    channel    TEXT NOT NULL,
    purpose    TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    code_expires_at REAL NOT NULL,
    expires_at REAL NOT NULL,     -- the code's expiry + retention
    details    TEXT,
    send_times TEXT               -- comma-separated epoch seconds, oldest first
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    key        TEXT PRIMARY KEY,
    count      INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    updated_at REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    key        TEXT NOT NULL,
    member     TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (key, member)
) WITHOUT ROWID;
-- Sliding logs (quotas with buckets=0): one row per send still in its window.
CREATE TABLE IF NOT EXISTS send_log (
    key        TEXT NOT NULL,
    send_id    TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (key, send_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS send_log_by_time ON send_log (key, at_ms);
-- Operators' lists of exempt and denied ranges.
CREATE TABLE IF NOT EXISTS overrides (
    list       TEXT NOT NULL,
    entry      TEXT NOT NULL,
    PRIMARY KEY (list, entry)
) WITHOUT ROWID;
-- Events waiting for delivery, in order; the lease of the one deliverer and how far
-- it got; pending verifications by their code's end (for verification.expired).
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    type       TEXT NOT NULL,
    at         REAL NOT NULL,
    data       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS event_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    owner      TEXT NOT NULL,
    until      REAL NOT NULL,
    delivered  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS awaiting (
    id         TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
-- What set each block (surge, conversion, failures), for operators.
CREATE TABLE IF NOT EXISTS blocks (
    kind       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    started_at REAL NOT NULL,
    ends_at    REAL NOT NULL,
    counts     TEXT NOT NULL,   -- JSON
    PRIMARY KEY (kind, scope)
) WITHOUT ROWID;
"""

# Columns added to a table after its first release: (table, column, declaration).
# A file written by an older release gains them when it is opened.
_ADDED_COLUMNS = (
    ("codes", "send_id", "TEXT"),
    ("codes", "new_members", "TEXT"),
    ("codes", "verification_id", "TEXT"),
    ("verifications", "details", "TEXT"),
    ("verifications", "send_times", "TEXT"),
    ("codes", "sent_at", "REAL"),
)


def _migrate(conn: sqlite3.Connection) -> None:
    for table, column, declaration in _ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


_PURGE_EVERY_SECONDS = 60.0
# Operations in one transaction at most, so one batch holds the lock briefly.
_MAX_BATCH = 64


@dataclass(slots=True)
class _Op(Generic[T]):
    """One store operation waiting for its batch, and what it came to."""

    fn: Callable[[sqlite3.Connection], T]
    future: asyncio.Future[T]
    deadline: float
    result: T | None = None
    error: BaseException | None = None

    def expired(self) -> bool:
        return time.monotonic() > self.deadline


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    error = StoreUnavailable()
    error.__cause__ = exc
    return error


class _Connection(sqlite3.Connection):
    """The store's connection, knowing whether its steps queue events (``_emit``)."""

    events_on = False


def _emit(conn: sqlite3.Connection, type: str, data: dict[str, Any], now: float) -> None:
    if getattr(conn, "events_on", False):
        conn.execute(
            "INSERT INTO events (type, at, data) VALUES (?, ?, ?)",
            (type, now, json.dumps(data, sort_keys=True)),
        )


def _finish(
    conn: sqlite3.Connection, verification_id: str, status: VerificationStatus, now: float
) -> None:
    """Set a final status, and tell of it."""
    _set_status(conn, verification_id, status, now)
    if getattr(conn, "events_on", False):
        conn.execute("DELETE FROM awaiting WHERE id = ?", (verification_id,))
        record = _verification(conn, verification_id, now, raw=True)
        if record is not None:
            _emit(conn, f"verification.{EVENT_NAMES[status]}", verification_data(record), now)


class SqliteStore:
    def __init__(
        self, path: Path | str, *, busy_timeout_ms: int = 2000, events: bool = False
    ) -> None:
        self._path = str(path)
        self._events_on = events
        self._lock_path: str | None = None
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            self._lock_path = self._path + ".lock"
        self._timeout = busy_timeout_ms / 1000
        # One thread owns the connection: sqlite3 objects are not shared across threads,
        # and it runs one batch of operations at a time (see _run_batch).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otpgate-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._next_purge = 0.0
        self._outage = OutageLog(log, "sqlite store")
        self._pending: list[_Op[Any]] = []
        self._running = False

    # -- plumbing ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self._lock_path is not None and self._lock_fd is None:
                self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            # Under the lock: two workers opening a new file at once could otherwise meet
            # in the switch to WAL, which SQLite refuses at once ("database is locked")
            # instead of waiting.
            with self._file_lock():
                conn = sqlite3.connect(
                    self._path,
                    timeout=self._timeout,
                    isolation_level=None,
                    check_same_thread=False,
                    factory=_Connection,
                )
                conn.events_on = self._events_on
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
                    conn.executescript(_SCHEMA)
                    _migrate(conn)
                except BaseException:
                    conn.close()
                    raise
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """The workers' exclusive turn on the file (nothing to share for ``:memory:``)."""
        if self._lock_fd is None:
            yield
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` as one atomic step, batched with the steps queued meanwhile."""
        loop = asyncio.get_running_loop()
        op = _Op(fn, loop.create_future(), time.monotonic() + self._timeout)
        self._pending.append(op)
        if not self._running:
            self._start_batch(loop)
        try:
            # The thread never runs an operation past its deadline; the extra second
            # only covers a thread stuck waiting for a stopped process's lock.
            return await asyncio.wait_for(asyncio.shield(op.future), self._timeout + 1)
        except TimeoutError:
            self._outage.failed(f"no answer within {self._timeout + 1:g}s")
            raise StoreUnavailable() from None

    def _start_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
        self._running = True
        done = loop.run_in_executor(self._executor, self._run_batch, batch)
        done.add_done_callback(lambda _: self._batch_done(loop, batch))

    def _batch_done(self, loop: asyncio.AbstractEventLoop, batch: list[_Op[Any]]) -> None:
        self._running = False
        for op in batch:
            if not op.future.done():
                if op.error is not None:
                    op.future.set_exception(op.error)
                else:
                    op.future.set_result(op.result)
        if self._pending:
            self._start_batch(loop)

    def _run_batch(self, batch: list[_Op[Any]]) -> None:
        """Every operation queued meanwhile, in one transaction: one lock, one commit.

        Workers share the file; SQLite's own busy handler sleeps in growing steps
        while the other worker takes the lock again and again, so a busy worker
        starved for seconds. Here writers queue on an exclusive ``flock`` of a lock
        file, which the kernel hands over as soon as it is released, and each holds
        it once for its whole batch. A savepoint per operation keeps each one atomic:
        one that fails rolls back alone.
        """
        try:
            conn = self._connect()
            with self._file_lock():
                live = [op for op in batch if not op.expired()]
                for op in batch:
                    if op.expired():
                        op.error = StoreUnavailable()
                if live:
                    self._transaction(conn, live)
        except sqlite3.Error as exc:
            self._outage.failed(f"{type(exc).__name__}: {exc}")
            for op in batch:
                op.error = _unavailable(exc)
        else:
            self._outage.ok()

    def _transaction(self, conn: sqlite3.Connection, ops: list[_Op[Any]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._maybe_purge(conn)
            for op in ops:
                conn.execute("SAVEPOINT op")
                try:
                    op.result = op.fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    op.error = _unavailable(exc) if isinstance(exc, sqlite3.Error) else exc
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _maybe_purge(self, conn: sqlite3.Connection) -> None:
        now = time.time()
        if now < self._next_purge:
            return
        self._next_purge = now + _PURGE_EVERY_SECONDS
        conn.execute("DELETE FROM codes WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM members WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM send_log WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM verifications WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM blocks WHERE ends_at <= ?", (now,))

    # -- operations --------------------------------------------------------------------
    async def issue(
        self, request: SendRequest, now: float, window: RequestWindow | None = None
    ) -> Issued | Refused:
        def tx(conn: sqlite3.Connection) -> Issued | Refused | None:
            hit = _count_window(conn, window, now) if window else None
            if hit and window and hit.over(window):
                return Refused("rate_limited", hit.reset_seconds, hit)
            if _until(conn, _void_key(request.phone, request.send_id), now):
                return None  # voided: the window's hit stays counted, nothing else
            outcome = _refusal(conn, request, now) or _charge(conn, request, now)
            return replace(outcome, window_hit=hit)

        outcome = await self._call(tx)
        if outcome is None:
            raise StoreUnavailable()
        return outcome

    async def void_issue(self, request: SendRequest, now: float) -> None:
        await self._call(lambda conn: _void(conn, request, now))

    async def begin_verify(
        self,
        phone: str,
        ttl_seconds: int,
        now: float,
        lockout: Lockout,
        window: RequestWindow | None = None,
    ) -> Attempt:
        def tx(conn: sqlite3.Connection) -> Attempt:
            hit = _count_window(conn, window, now) if window else None
            if hit and window and hit.over(window):
                return Attempt(attempts=0, code_hash=None, window_hit=hit)
            return replace(_begin_verify(conn, phone, ttl_seconds, now, lockout), window_hit=hit)

        return await self._call(tx)

    async def consume(
        self,
        phone: str,
        code_hash: bytes,
        now: float,
        verification_id: str = "",
        ranges: Sequence[str] = (),
    ) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "DELETE FROM codes WHERE phone = ? AND code_hash = ? AND expires_at > ?"
                " RETURNING verification_id, sent_at",
                (phone, code_hash, now),
            ).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM counters WHERE key = ?", (_fails_key(phone),))
            conn.execute("DELETE FROM blocks WHERE scope = ?", (phone,))
            if row[1] is not None:
                for scope in ranges:
                    _count_range(conn, scope, "a", float(row[1]), now, 1)
            if verification_id and row[0] == verification_id:
                pending = conn.execute(
                    "SELECT 1 FROM verifications WHERE id = ? AND status = 'pending'",
                    (verification_id,),
                ).fetchone()
                if pending:
                    _finish(conn, verification_id, "approved", now)
            return True

        return await self._call(tx)

    async def get_verification(self, verification_id: str, now: float) -> Verification | None:
        return await self._call(lambda conn: _verification(conn, verification_id, now))

    async def finish_verification(
        self, verification_id: str, status: VerificationStatus, now: float
    ) -> Verification | None:
        def tx(conn: sqlite3.Connection) -> Verification | None:
            seen = _verification(conn, verification_id, now)
            if seen is None or seen.status != "pending":
                return seen
            if status in ("canceled", "approved"):
                conn.execute("DELETE FROM codes WHERE phone = ?", (seen.phone,))
            _finish(conn, verification_id, status, now)
            return replace(seen, status=status, updated_at=now)

        return await self._call(tx)

    # -- events (EventLog) ---------------------------------------------------------------
    async def append_event(self, type: str, data: dict[str, Any], now: float) -> None:
        await self._call(lambda conn: _emit(conn, type, data, now))

    async def next_events(
        self, owner: str, now: float, lease_seconds: float, limit: int
    ) -> list[Event] | None:
        def tx(conn: sqlite3.Connection) -> list[Event] | None:
            row = conn.execute("SELECT owner, until, delivered FROM event_lease").fetchone()
            delivered = int(row[2]) if row else 0
            if row and row[0] != owner and row[1] > now:
                return None
            conn.execute(
                "INSERT OR REPLACE INTO event_lease (id, owner, until, delivered)"
                " VALUES (1, ?, ?, ?)",
                (owner, now + lease_seconds, delivered),
            )
            return [
                Event(str(seq), type, at, json.loads(data))
                for seq, type, at, data in conn.execute(
                    "SELECT seq, type, at, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (delivered, limit),
                )
            ]

        return await self._call(tx)

    async def ack_event(self, owner: str, event_id: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            done = conn.execute(
                "UPDATE event_lease SET delivered = max(delivered, ?) WHERE owner = ?",
                (int(event_id), owner),
            ).rowcount
            if done:
                conn.execute("DELETE FROM events WHERE seq <= ?", (int(event_id),))

        await self._call(tx)

    async def sweep_expired(self, now: float, limit: int) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            due = conn.execute(
                "SELECT id FROM awaiting WHERE expires_at <= ? ORDER BY expires_at, id LIMIT ?",
                (now, limit),
            ).fetchall()
            for (vid,) in due:
                conn.execute("DELETE FROM awaiting WHERE id = ?", (vid,))
                record = _verification(conn, vid, now, raw=True)
                if record is not None and record.status == "pending":
                    seen = replace(record, status="expired")
                    _emit(conn, "verification.expired", verification_data(seen), now)
            return len(due)

        return await self._call(tx)

    async def set_channel(self, verification_id: str, channel: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE verifications SET channel = ? WHERE id = ?", (channel, verification_id)
            )

        await self._call(tx)

    # -- what operators see and undo (DefenceStore) ------------------------------------
    async def blocks(self, now: float) -> list[Block]:
        return await self._call(lambda conn: _blocks(conn, now))

    async def lift_block(self, kind: str, scope: str, now: float) -> Block | None:
        def tx(conn: sqlite3.Connection) -> Block | None:
            found = [b for b in _blocks(conn, now) if (b.kind, b.scope) == (kind, scope)]
            if not found:
                return None
            conn.execute("DELETE FROM blocks WHERE kind = ? AND scope = ?", (kind, scope))
            # Until it would have ended, the range's guards let it be (a count of 0).
            graced = conn.execute(
                "UPDATE counters SET count = 0 WHERE key = ?", (_block_key(kind, scope),)
            ).rowcount
            if not graced:  # a lockout
                conn.execute("DELETE FROM counters WHERE key = ?", (_fails_key(scope),))
            return found[0]

        return await self._call(tx)

    async def phone_state(self, phone: str, now: float, sends: Quota) -> PhoneState:
        def read(conn: sqlite3.Connection) -> PhoneState:
            code = conn.execute(
                "SELECT code_hash IS NOT NULL, expires_at, attempts, verification_id"
                " FROM codes WHERE phone = ? AND expires_at > ?",
                (phone, now),
            ).fetchone()
            pending = bool(code and code[0])
            cooldown = _until(conn, _cooldown_key(phone), now)
            fails = conn.execute(
                "SELECT count, updated_at FROM counters WHERE key = ? AND expires_at > ?",
                (_fails_key(phone), now),
            ).fetchone()
            (logged,) = conn.execute(
                "SELECT COUNT(*) FROM send_log WHERE key = ? AND at_ms > ?",
                (_log_key(sends.kind, sends.key), to_ms(now) - sends.window_ms),
            ).fetchone()
            record = _verification(conn, code[3], now) if code and code[3] else None
            return PhoneState(
                phone=phone,
                code_pending=pending,
                code_expires_at=float(code[1]) if pending else None,
                attempts=int(code[2]) if pending else 0,
                cooldown_until=cooldown or None,
                sends_in_window=int(logged),
                failures=int(fails[0]) if fails else 0,
                last_failure_at=float(fails[1]) if fails else None,
                verification=record,
            )

        return await self._call(read)

    async def set_override(self, which: OverrideList, entry: str, present: bool) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            if present:
                sql = "INSERT OR IGNORE INTO overrides (list, entry) VALUES (?, ?)"
            else:
                sql = "DELETE FROM overrides WHERE list = ? AND entry = ?"
            return bool(conn.execute(sql, (which, entry)).rowcount)

        return await self._call(tx)

    async def overrides(self) -> dict[OverrideList, list[str]]:
        def read(conn: sqlite3.Connection) -> dict[OverrideList, list[str]]:
            lists: dict[OverrideList, list[str]] = {"exempt": [], "deny": []}
            for which, entry in conn.execute(
                "SELECT list, entry FROM overrides ORDER BY list, entry"
            ):
                lists[which].append(entry)
            return lists

        return await self._call(read)

    async def range_stats(self, now: float) -> list[RangeStats]:
        return await self._call(lambda conn: _range_stats(conn, now))

    async def hit_window(self, window: RequestWindow, now: float) -> WindowHit:
        return await self._call(lambda conn: _count_window(conn, window, now))

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        # Let queued operations finish first: they are answers somebody waits for.
        await asyncio.gather(*(op.future for op in self._pending), return_exceptions=True)

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)


def _cooldown_key(phone: str) -> str:
    return f"cd:{phone}"


def _fails_key(phone: str) -> str:
    return f"fails:{phone}"


def _void_key(phone: str, send_id: str) -> str:
    return f"void:{phone}:{send_id}"


def _counter_key(kind: str, scope: str, index: int) -> str:
    """A surge guard's fixed window ``index``."""
    return f"q:{kind}:{scope}:{index}"


def _bucket_key(kind: str, scope: str, index: int) -> str:
    """A quota's sub-window ``index``."""
    return f"s:{kind}:{scope}:{index}"


def _log_key(kind: str, scope: str) -> str:
    """A quota's sliding log, in the send_log table."""
    return f"{kind}:{scope}"


def _set_key(kind: str, scope: str, index: int) -> str:
    return f"d:{kind}:{scope}:{index}"


def _block_key(kind: str, scope: str) -> str:
    return f"b:{kind}:{scope}"


def _count(conn: sqlite3.Connection, key: str, now: float) -> int:
    row = conn.execute(
        "SELECT count FROM counters WHERE key = ? AND expires_at > ?", (key, now)
    ).fetchone()
    return int(row[0]) if row else 0


def _until(conn: sqlite3.Connection, key: str, now: float) -> float:
    """End of a live marker (cooldown, block), or 0."""
    row = conn.execute(
        "SELECT expires_at FROM counters WHERE key = ? AND expires_at > ?", (key, now)
    ).fetchone()
    return float(row[0]) if row else 0.0


def _mark_until(conn: sqlite3.Connection, key: str, until: float) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO counters (key, count, expires_at) VALUES (?, 1, ?)", (key, until)
    )


def _incr(conn: sqlite3.Connection, key: str, expires_at: float, now: float) -> None:
    conn.execute(
        "INSERT INTO counters (key, count, expires_at) VALUES (?, 1, ?)"
        " ON CONFLICT(key) DO UPDATE SET"
        " count = CASE WHEN expires_at <= ? THEN 1 ELSE count + 1 END,"
        " expires_at = excluded.expires_at",
        (key, expires_at, now),
    )


def _decr(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("UPDATE counters SET count = count - 1 WHERE key = ?", (key,))
    conn.execute("DELETE FROM counters WHERE key = ? AND count <= 0", (key,))


def _quota_wait(conn: sqlite3.Connection, q: Quota, now: float) -> int:
    """ms until one more send fits under ``q`` (0: it fits now)."""
    now_ms = to_ms(now)
    if not q.buckets:
        key = _log_key(q.kind, q.key)
        # The sends that have left the window leave the log.
        conn.execute(
            "DELETE FROM send_log WHERE key = ? AND at_ms <= ?", (key, now_ms - q.window_ms)
        )
        times = [
            int(row[0])
            for row in conn.execute(
                "SELECT at_ms FROM send_log WHERE key = ? ORDER BY at_ms", (key,)
            )
        ]
        return log_wait(times, q.limit, q.window_ms, now_ms)
    counted = buckets_counted(now_ms, q.window_ms, q.buckets)
    counts = [_count(conn, _bucket_key(q.kind, q.key, j), now) for j in counted]
    return buckets_wait(counts, counted.start, q.limit, q.window_ms, q.buckets, now_ms)


def _listed(conn: sqlite3.Connection, which: str, entries: Sequence[str]) -> bool:
    if not entries:
        return False
    marks = ",".join("?" * len(entries))
    row = conn.execute(
        f"SELECT 1 FROM overrides WHERE list = ? AND entry IN ({marks}) LIMIT 1",  # noqa: S608
        (which, *entries),
    ).fetchone()
    return row is not None


def _refusal(conn: sqlite3.Connection, request: SendRequest, now: float) -> Refused | None:
    """The same checks, in the same order, as the Redis store's issue script."""
    if _listed(conn, "deny", request.overrides):
        return Refused(RANGE_DENIED, 0)
    exempt = _listed(conn, "exempt", request.overrides)
    surges = () if exempt else tuple(request.surges)
    conversions = () if exempt else tuple(request.conversions)
    graced = set()
    for kind, key in [(g.kind, g.key) for g in surges] + [(c.kind, c.key) for c in conversions]:
        row = conn.execute(
            "SELECT count, expires_at FROM counters WHERE key = ? AND expires_at > ?",
            (_block_key(kind, key), now),
        ).fetchone()
        if row and row[0]:
            return Refused(kind, max(1, math.ceil(row[1] - now)))
        if row:
            graced.add((kind, key))  # lifted: a count of 0 until it would have ended
    surges = tuple(g for g in surges if (g.kind, g.key) not in graced)
    conversions = tuple(c for c in conversions if (c.kind, c.key) not in graced)

    until = _until(conn, _cooldown_key(request.phone), now)
    if until:
        return Refused("resend_cooldown", max(1, math.ceil(until - now)))

    for q in request.quotas:
        wait_ms = _quota_wait(conn, q, now)
        if wait_ms > 0:
            return Refused(q.kind, retry_seconds(wait_ms))

    for d in request.distinct:
        key = _set_key(d.kind, d.key, window_index(now, d.window_seconds))
        known = conn.execute(
            "SELECT 1 FROM members WHERE key = ? AND member = ? AND expires_at > ?",
            (key, d.member, now),
        ).fetchone()
        if not known:
            (size,) = conn.execute(
                "SELECT COUNT(*) FROM members WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            if size >= d.limit:
                return Refused(d.kind, seconds_until_window_ends(now, d.window_seconds))

    return _guard_refusal(conn, surges, conversions, now)


def _guard_refusal(
    conn: sqlite3.Connection,
    surges: Sequence[SurgeGuard],
    conversions: Sequence[ConversionGuard],
    now: float,
) -> Refused | None:
    """The range rules, last: a surge or a low conversion refuses and blocks."""
    for g in surges:
        idx = window_index(now, g.window_seconds)
        prev = _count(conn, _counter_key(g.kind, g.key, idx - 1), now)
        cur = _count(conn, _counter_key(g.kind, g.key, idx), now)
        if cur + 1 > g.allowed(prev):
            counts = {"sends": cur + 1, "previous": prev}
            return _block(conn, g.kind, g.key, "surge", now, g.block_seconds, counts)

    for c in conversions:
        weighed = settled_buckets(to_ms(now), c.settle_seconds * 1000)
        sends = sum(_count(conn, _range_key(c.key, "s", j), now) for j in weighed)
        approvals = sum(_count(conn, _range_key(c.key, "a", j), now) for j in weighed)
        if c.too_low(sends, approvals):
            counts = {"sends": sends, "approvals": approvals}
            return _block(conn, c.kind, c.key, "conversion", now, c.block_seconds, counts)
    return None


def _block(
    conn: sqlite3.Connection,
    kind: str,
    key: str,
    reason: str,
    now: float,
    seconds: int,
    counts: dict[str, int],
) -> Refused:
    _mark_until(conn, _block_key(kind, key), now + seconds)
    _record_block(conn, Block(kind, key, reason, now, now + seconds, counts))
    return Refused(kind, seconds)


def _record_block(conn: sqlite3.Connection, block: Block) -> None:
    _store_block(conn, block)
    _emit(conn, "block.created", block_data(block), block.started_at)


def _store_block(conn: sqlite3.Connection, block: Block) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO blocks (kind, scope, reason, started_at, ends_at, counts)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            block.kind,
            block.scope,
            block.reason,
            block.started_at,
            block.ends_at,
            json.dumps(block.counts, sort_keys=True),
        ),
    )


def _range_key(scope: str, which: str, bucket: int) -> str:
    """A range's count: ``s``/``a`` sends/approvals per stat bucket, ``S``/``A`` per hour."""
    return f"r:{which}:{scope}:{bucket}"


def _count_range(
    conn: sqlite3.Connection, scope: str, which: str, sent_at: float, now: float, by: int
) -> None:
    """Count a send (``s``) or approval (``a``) in the range's buckets of ``sent_at``."""
    j, h = stat_bucket(sent_at), day_bucket(sent_at)
    keys = (
        (_range_key(scope, which, j), (j + STAT_BUCKETS_KEPT) * STAT_BUCKET_SECONDS),
        (_range_key(scope, which.upper(), h), (h + DAY_BUCKETS_KEPT) * HOUR),
    )
    for key, until in keys:
        if until <= now:
            continue
        if by > 0:
            _incr(conn, key, until, now)
        else:
            _decr(conn, key)


def _charge(conn: sqlite3.Connection, request: SendRequest, now: float) -> Issued:
    if request.cooldown_seconds > 0:
        _mark_until(conn, _cooldown_key(request.phone), now + request.cooldown_seconds)
    now_ms = to_ms(now)
    for q in request.quotas:
        if q.buckets:
            j = bucket_index(now_ms, q.window_ms, q.buckets)
            leaves_ms = bucket_leaves(j, q.window_ms, q.buckets)
            _incr(conn, _bucket_key(q.kind, q.key, j), leaves_ms / 1000, now)
        else:
            conn.execute(
                "INSERT OR REPLACE INTO send_log (key, send_id, at_ms, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (_log_key(q.kind, q.key), request.send_id, now_ms, (now_ms + q.window_ms) / 1000),
            )
    for g in request.surges:
        idx = window_index(now, g.window_seconds)
        # Lives through the next window too, where it is the baseline.
        _incr(conn, _counter_key(g.kind, g.key, idx), (idx + 2) * g.window_seconds, now)
    added = []
    for d in request.distinct:
        idx = window_index(now, d.window_seconds)
        cursor = conn.execute(
            "INSERT OR IGNORE INTO members (key, member, expires_at) VALUES (?, ?, ?)",
            (_set_key(d.kind, d.key, idx), d.member, (idx + 1) * d.window_seconds),
        )
        added.append(cursor.rowcount == 1)
    for scope in request.ranges:
        _count_range(conn, scope, "s", now, now, 1)
    expires_at = now + request.ttl_seconds
    resumed = _resumable(conn, request, now)  # before the code is replaced
    if resumed is None:
        _supersede(conn, request.phone, now)
    vid = resumed[0] if resumed is not None else request.verification_id
    if vid and getattr(conn, "events_on", False):
        conn.execute(
            "INSERT OR REPLACE INTO awaiting (id, expires_at) VALUES (?, ?)", (vid, expires_at)
        )
    conn.execute(
        "INSERT OR REPLACE INTO codes (phone, code_hash, attempts, expires_at, send_id,"
        " new_members, verification_id, sent_at) VALUES (?, ?, 0, ?, ?, ?, ?, ?)",
        (
            request.phone,
            request.code_hash,
            expires_at,
            request.send_id,
            "".join("1" if new else "0" for new in added),
            vid or None,
            now,
        ),
    )
    if resumed is not None:
        conn.execute(
            "UPDATE verifications SET updated_at = ?, code_expires_at = ?, expires_at = ?,"
            " send_times = ? WHERE id = ?",
            (
                now,
                expires_at,
                expires_at + request.retention_seconds,
                _join_times((*resumed[1], now)[-SENDS_KEPT:]),
                vid,
            ),
        )
    elif vid:
        conn.execute(
            "INSERT OR REPLACE INTO verifications (id, phone, status, channel, purpose,"
            " created_at, updated_at, code_expires_at, expires_at, details, send_times)"
            " VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                vid,
                request.phone,
                request.channel,
                request.purpose,
                now,
                now,
                expires_at,
                expires_at + request.retention_seconds,
                request.details,
                _join_times((now,)),
            ),
        )
    return Issued(request, now, verification_id=vid)


def _supersede(conn: sqlite3.Connection, phone: str, now: float) -> None:
    """A newer send replaces the phone's live code: its pending verification is
    canceled from now on (``Verification.seen_at``); with events on, say so."""
    if not getattr(conn, "events_on", False):
        return
    row = conn.execute(
        "SELECT verification_id FROM codes WHERE phone = ? AND expires_at > ?"
        " AND verification_id IS NOT NULL",
        (phone, now),
    ).fetchone()
    record = _verification(conn, row[0], now, raw=True) if row else None
    if record is not None and record.status == "pending":
        conn.execute("DELETE FROM awaiting WHERE id = ?", (record.id,))
        seen = replace(record, status="canceled")
        _emit(conn, "verification.canceled", verification_data(seen), now)


def _resumable(
    conn: sqlite3.Connection, request: SendRequest, now: float
) -> tuple[str, tuple[float, ...]] | None:
    """The pending verification this send continues (``request.resume``): its id and
    send times."""
    if not (request.resume and request.verification_id):
        return None
    row = conn.execute(
        "SELECT v.id, v.send_times FROM codes AS c JOIN verifications AS v"
        " ON v.id = c.verification_id"
        " WHERE c.phone = ? AND c.expires_at > ? AND v.status = 'pending'"
        " AND v.code_expires_at > ? AND v.purpose IS ? AND v.channel = ? AND v.details IS ?",
        (request.phone, now, now, request.purpose, request.channel, request.details),
    ).fetchone()
    return None if row is None else (row[0], _split_times(row[1]))


def _join_times(times: tuple[float, ...]) -> str:
    return ",".join(repr(t) for t in times)


def _split_times(text: str | None) -> tuple[float, ...]:
    return tuple(float(t) for t in text.split(",")) if text else ()


def _set_status(
    conn: sqlite3.Connection, verification_id: str, status: VerificationStatus, now: float
) -> None:
    conn.execute(
        "UPDATE verifications SET status = ?, updated_at = ? WHERE id = ?",
        (status, now, verification_id),
    )


def _verification(
    conn: sqlite3.Connection, verification_id: str, now: float, *, raw: bool = False
) -> Verification | None:
    """The record as of ``now`` (``Verification.seen_at``); ``raw``: as stored."""
    row = conn.execute(
        "SELECT v.phone, v.status, v.channel, v.purpose, v.created_at, v.updated_at,"
        " v.code_expires_at, c.verification_id IS NOT NULL AND c.expires_at > ?,"
        " v.details, v.send_times"
        " FROM verifications AS v LEFT JOIN codes AS c"
        " ON c.phone = v.phone AND c.verification_id = v.id"
        " WHERE v.id = ? AND v.expires_at > ?",
        (now, verification_id, now),
    ).fetchone()
    if row is None:
        return None
    record = Verification(
        id=verification_id,
        phone=row[0],
        status=row[1],
        channel=row[2],
        purpose=row[3],
        created_at=row[4],
        updated_at=row[5],
        expires_at=row[6],
        details=row[8],
        send_times=_split_times(row[9]),
    )
    return record if raw else record.seen_at(now, bool(row[7]))


def _blocks(conn: sqlite3.Connection, now: float) -> list[Block]:
    """Recorded blocks still in force: a range's block marker, or a phone's failures."""
    live = []
    for kind, scope, reason, started, ends, counts in conn.execute(
        "SELECT kind, scope, reason, started_at, ends_at, counts FROM blocks"
        " WHERE ends_at > ? ORDER BY started_at, kind, scope",
        (now,),
    ).fetchall():
        marker = _block_key(kind, scope) if reason != "failures" else _fails_key(scope)
        row = conn.execute(
            "SELECT count FROM counters WHERE key = ? AND expires_at > ?", (marker, now)
        ).fetchone()
        if row and row[0]:  # a lifted block is graced, at 0
            live.append(Block(kind, scope, reason, started, ends, json.loads(counts)))
    return live


def _range_stats(conn: sqlite3.Connection, now: float) -> list[RangeStats]:
    j, h = stat_bucket(now), day_bucket(now)
    counts: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        "SELECT key, count FROM counters WHERE key LIKE 'r:%' AND expires_at > ?", (now,)
    )
    for key, count in rows:
        _, which, rest = key.split(":", 2)
        scope, _, bucket = rest.rpartition(":")
        b = int(bucket)
        in_hour = which in "sa" and j - 11 <= b <= j
        in_day = which in "SA" and h - 23 <= b <= h
        if in_hour or in_day:
            scope_counts = counts.setdefault(scope, {})
            scope_counts[which] = scope_counts.get(which, 0) + int(count)
    return [
        RangeStats(scope, c.get("s", 0), c.get("a", 0), c.get("S", 0), c.get("A", 0))
        for scope, c in sorted(counts.items())
        if c.get("S", 0)
    ]


def _void(conn: sqlite3.Connection, request: SendRequest, now: float) -> None:
    row = conn.execute(
        "DELETE FROM codes WHERE phone = ? AND send_id = ? RETURNING new_members, verification_id",
        (request.phone, request.send_id),
    ).fetchone()
    if row is None:
        # Not issued yet (or consumed, or replaced): make sure it never is.
        _mark_until(conn, _void_key(request.phone, request.send_id), now + request.reach_seconds)
        return
    for scope in request.ranges:
        _count_range(conn, scope, "s", now, now, -1)
    new_members = [flag == "1" for flag in row[0] or ""]
    if row[1]:
        _finish(conn, row[1], "failed", now)
    conn.execute("DELETE FROM counters WHERE key = ?", (_cooldown_key(request.phone),))
    for q in request.quotas:
        if q.buckets:
            j = bucket_index(to_ms(now), q.window_ms, q.buckets)
            _decr(conn, _bucket_key(q.kind, q.key, j))
        else:
            conn.execute(
                "DELETE FROM send_log WHERE key = ? AND send_id = ?",
                (_log_key(q.kind, q.key), request.send_id),
            )
    for g in request.surges:
        _decr(conn, _counter_key(g.kind, g.key, window_index(now, g.window_seconds)))
    for d, new in zip(request.distinct, new_members, strict=False):
        if new:
            conn.execute(
                "DELETE FROM members WHERE key = ? AND member = ?",
                (_set_key(d.kind, d.key, window_index(now, d.window_seconds)), d.member),
            )


def _count_window(conn: sqlite3.Connection, window: RequestWindow, now: float) -> WindowHit:
    row = conn.execute(
        "INSERT INTO counters (key, count, expires_at) VALUES (?, 1, ?)"
        " ON CONFLICT(key) DO UPDATE SET"
        " count = CASE WHEN expires_at <= ? THEN 1 ELSE count + 1 END,"
        " expires_at = CASE WHEN expires_at <= ? THEN excluded.expires_at"
        " ELSE expires_at END"
        " RETURNING count, expires_at",
        (f"w:{window.key}", now + window.window_ms / 1000, now, now),
    ).fetchone()
    # Rounded, not truncated: the float seconds of a whole-ms instant are inexact, and
    # truncating made 9999 ms left come out as 9998.
    return WindowHit(count=int(row[0]), reset_after_ms=max(0, round((row[1] - now) * 1000)))


def _begin_verify(
    conn: sqlite3.Connection, phone: str, ttl_seconds: int, now: float, lockout: Lockout
) -> Attempt:
    row = conn.execute(
        "SELECT count, updated_at, expires_at FROM counters WHERE key = ? AND expires_at > ?",
        (_fails_key(phone), now),
    ).fetchone()
    failures, last, fails_until = (
        (int(row[0]), float(row[1]), float(row[2])) if row else (0, 0.0, 0.0)
    )
    wait = lockout.wait_seconds(failures)
    if wait and last + wait > now:
        return Attempt(attempts=0, code_hash=None, locked_for=max(1, math.ceil(last + wait - now)))
    # An expired row starts over as "no code", so a guess at an expired code
    # counts like a guess at a phone that never had one.
    code = conn.execute(
        "INSERT INTO codes (phone, code_hash, attempts, expires_at) VALUES (?, NULL, 1, ?)"
        " ON CONFLICT(phone) DO UPDATE SET"
        " code_hash = CASE WHEN expires_at <= ? THEN NULL ELSE code_hash END,"
        " attempts = CASE WHEN expires_at <= ? THEN 1 ELSE attempts + 1 END,"
        " send_id = CASE WHEN expires_at <= ? THEN NULL ELSE send_id END,"
        " verification_id = CASE WHEN expires_at <= ? THEN NULL ELSE verification_id END,"
        " expires_at = CASE WHEN expires_at <= ? THEN excluded.expires_at ELSE expires_at END"
        " RETURNING attempts, code_hash, verification_id",
        (phone, now + ttl_seconds, now, now, now, now, now),
    ).fetchone()
    # Failures against a live code are remembered long; a guess at a phone with no
    # code only as long as a code would live (as in the Redis store).
    if code[1] is not None:
        fails_until = now + lockout.memory_seconds
    else:
        fails_until = max(fails_until, now + ttl_seconds)
    conn.execute(
        "INSERT OR REPLACE INTO counters (key, count, expires_at, updated_at) VALUES (?, ?, ?, ?)",
        (_fails_key(phone), failures + 1, fails_until, now),
    )
    locked = lockout.wait_seconds(failures + 1)
    if locked:
        # A failure that locks the phone: operators see it among the blocks.
        counts = {"failures": failures + 1}
        _record_block(conn, Block(lockout.kind, phone, "failures", now, now + locked, counts))
    return Attempt(attempts=int(code[0]), code_hash=code[1], verification_id=code[2] or "")
