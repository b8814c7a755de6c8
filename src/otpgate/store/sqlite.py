"""Embedded SQLite store: the zero-dependency default, one file on disk.

Every operation is one step of the store rules (``otpgate.store.rules``) over the
SQL primitives here (``_Sql``), run as one transaction (``BEGIN IMMEDIATE``) on a
private thread, so it is atomic within a process, and SQLite's file lock makes it
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.ports import Block, Event, OverrideList, Verification
from otpgate.observability.outage import OutageLog
from otpgate.store.state import Code, Counter, Record, State
from otpgate.store.steps import RuleSteps

log = logging.getLogger(__name__)

P = ParamSpec("P")
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


class _Sql:
    """The store rules' primitives (``otpgate.store.state.State``) over the tables above,
    inside the transaction of the step that calls them."""

    def __init__(self, conn: sqlite3.Connection, events: bool) -> None:
        self.run = conn.execute
        self.events = events

    def counter(self, key: str, now: float) -> Counter | None:
        row = self.run(
            "SELECT count, expires_at, updated_at FROM counters WHERE key = ? AND expires_at > ?",
            (key, now),
        ).fetchone()
        return Counter(*row) if row else None

    def counts(self, keys: Sequence[str], now: float) -> list[int]:
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        found = dict(
            self.run(
                f"SELECT key, count FROM counters WHERE key IN ({marks}) AND expires_at > ?",  # noqa: S608
                (*keys, now),
            ).fetchall()
        )
        return [int(found.get(key, 0)) for key in keys]

    def counters_under(self, prefix: str, now: float) -> list[tuple[str, int]]:
        return self.run(
            "SELECT key, count FROM counters WHERE substr(key, 1, ?) = ? AND expires_at > ?",
            (len(prefix), prefix, now),
        ).fetchall()

    def put_counter(self, key: str, count: int, expires_at: float, updated_at: float = 0.0) -> None:
        self.run(
            "INSERT OR REPLACE INTO counters (key, count, expires_at, updated_at)"
            " VALUES (?, ?, ?, ?)",
            (key, count, expires_at, updated_at),
        )

    def bump(self, key: str, expires_at: float, now: float, *, extend: bool) -> Counter:
        row = self.run(
            "INSERT INTO counters (key, count, expires_at) VALUES (?, 1, ?)"
            " ON CONFLICT(key) DO UPDATE SET"
            " count = CASE WHEN expires_at <= ? THEN 1 ELSE count + 1 END,"
            " expires_at = CASE WHEN ? OR expires_at <= ? THEN excluded.expires_at"
            " ELSE expires_at END"
            " RETURNING count, expires_at, updated_at",
            (key, expires_at, now, extend, now),
        ).fetchone()
        return Counter(*row)

    def decrement(self, key: str) -> None:
        self.run("UPDATE counters SET count = count - 1 WHERE key = ?", (key,))
        self.run("DELETE FROM counters WHERE key = ? AND count <= 0", (key,))

    def drop_counter(self, key: str) -> None:
        self.run("DELETE FROM counters WHERE key = ?", (key,))

    def log_times(self, key: str, after_ms: int) -> list[int]:
        self.run("DELETE FROM send_log WHERE key = ? AND at_ms <= ?", (key, after_ms))
        rows = self.run("SELECT at_ms FROM send_log WHERE key = ? ORDER BY at_ms", (key,))
        return [int(at) for (at,) in rows]

    def log_add(self, key: str, send_id: str, at_ms: int, expires_at: float) -> None:
        self.run(
            "INSERT OR REPLACE INTO send_log (key, send_id, at_ms, expires_at) VALUES (?, ?, ?, ?)",
            (key, send_id, at_ms, expires_at),
        )

    def log_remove(self, key: str, send_id: str) -> None:
        self.run("DELETE FROM send_log WHERE key = ? AND send_id = ?", (key, send_id))

    def membership(self, key: str, member: str, now: float) -> tuple[bool, int]:
        known = self.run(
            "SELECT 1 FROM members WHERE key = ? AND member = ? AND expires_at > ?",
            (key, member, now),
        ).fetchone()
        if known:
            return True, 0
        (size,) = self.run(
            "SELECT COUNT(*) FROM members WHERE key = ? AND expires_at > ?", (key, now)
        ).fetchone()
        return False, int(size)

    def add_member(self, key: str, member: str, expires_at: float) -> bool:
        return (
            self.run(
                "INSERT OR IGNORE INTO members (key, member, expires_at) VALUES (?, ?, ?)",
                (key, member, expires_at),
            ).rowcount
            == 1
        )

    def remove_member(self, key: str, member: str) -> None:
        self.run("DELETE FROM members WHERE key = ? AND member = ?", (key, member))

    def code(self, phone: str, now: float | None = None) -> Code | None:
        row = self.run(
            "SELECT code_hash, attempts, expires_at, send_id, new_members, verification_id,"
            " sent_at FROM codes WHERE phone = ? AND expires_at > ?",
            (phone, -math.inf if now is None else now),
        ).fetchone()
        if row is None:
            return None
        flags = tuple(flag == "1" for flag in row[4] or "")
        return Code(row[0], int(row[1]), row[2], row[3] or "", flags, row[5] or "", row[6])

    def put_code(self, phone: str, code: Code) -> None:
        self.run(
            "INSERT OR REPLACE INTO codes (phone, code_hash, attempts, expires_at, send_id,"
            " new_members, verification_id, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                phone,
                code.code_hash,
                code.attempts,
                code.expires_at,
                code.send_id or None,
                "".join("1" if new else "0" for new in code.new_members),
                code.verification_id or None,
                code.sent_at,
            ),
        )

    def drop_code(self, phone: str) -> None:
        self.run("DELETE FROM codes WHERE phone = ?", (phone,))

    def record(self, verification_id: str) -> Record | None:
        row = self.run(
            "SELECT phone, status, channel, purpose, created_at, updated_at, code_expires_at,"
            " details, send_times, expires_at FROM verifications WHERE id = ?",
            (verification_id,),
        ).fetchone()
        if row is None:
            return None
        phone, status, channel, purpose, created, updated, ends, details, times, kept = row
        sends = tuple(float(t) for t in times.split(",")) if times else ()
        v = Verification(
            verification_id, phone, status, channel, purpose, created, updated, ends, details, sends
        )
        return Record(v, kept)

    def put_record(self, record: Record) -> None:
        v = record.verification
        self.run(
            "INSERT OR REPLACE INTO verifications (id, phone, status, channel, purpose,"
            " created_at, updated_at, code_expires_at, expires_at, details, send_times)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                v.id,
                v.phone,
                v.status,
                v.channel,
                v.purpose,
                v.created_at,
                v.updated_at,
                v.expires_at,
                record.expires_at,
                v.details,
                ",".join(repr(t) for t in v.send_times),
            ),
        )

    def block_records(self, now: float) -> list[Block]:
        rows = self.run(
            "SELECT kind, scope, reason, started_at, ends_at, counts FROM blocks WHERE ends_at > ?",
            (now,),
        )
        return [
            Block(k, s, why, start, end, json.loads(counts))
            for k, s, why, start, end, counts in rows
        ]

    def put_block(self, block: Block) -> None:
        self.run(
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

    def drop_blocks(self, scope: str, kind: str | None = None) -> None:
        self.run("DELETE FROM blocks WHERE scope = ? AND coalesce(?, kind) = kind", (scope, kind))

    def listed(self, entries: Sequence[str]) -> set[OverrideList]:
        marks = ",".join("?" * len(entries))
        rows = self.run(
            "SELECT DISTINCT list FROM overrides"  # noqa: S608
            f" WHERE list IN ('deny', 'exempt') AND entry IN ({marks})",
            tuple(entries),
        )
        return {which for (which,) in rows}

    def set_listed(self, which: OverrideList, entry: str, present: bool) -> bool:
        if present:
            sql = "INSERT OR IGNORE INTO overrides (list, entry) VALUES (?, ?)"
        else:
            sql = "DELETE FROM overrides WHERE list = ? AND entry = ?"
        return bool(self.run(sql, (which, entry)).rowcount)

    def list_entries(self) -> list[tuple[OverrideList, str]]:
        return self.run("SELECT list, entry FROM overrides").fetchall()

    def push_event(self, type: str, at: float, data: dict[str, Any]) -> None:
        self.run(
            "INSERT INTO events (type, at, data) VALUES (?, ?, ?)",
            (type, at, json.dumps(data, sort_keys=True)),
        )

    def events_after(self, seq: int, limit: int) -> list[Event]:
        rows = self.run(
            "SELECT seq, type, at, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [Event(str(n), type, at, json.loads(data)) for n, type, at, data in rows]

    def drop_events(self, through: int) -> None:
        self.run("DELETE FROM events WHERE seq <= ?", (through,))

    def lease(self) -> tuple[str, float, int] | None:
        row = self.run("SELECT owner, until, delivered FROM event_lease").fetchone()
        return (row[0], row[1], int(row[2])) if row else None

    def put_lease(self, owner: str, until: float, delivered: int) -> None:
        self.run(
            "INSERT OR REPLACE INTO event_lease (id, owner, until, delivered) VALUES (1, ?, ?, ?)",
            (owner, until, delivered),
        )

    def await_end(self, verification_id: str, ends_at: float) -> None:
        self.run(
            "INSERT OR REPLACE INTO awaiting (id, expires_at) VALUES (?, ?)",
            (verification_id, ends_at),
        )

    def drop_awaiting(self, verification_id: str) -> None:
        self.run("DELETE FROM awaiting WHERE id = ?", (verification_id,))

    def due(self, now: float, limit: int) -> list[str]:
        rows = self.run(
            "SELECT id FROM awaiting WHERE expires_at <= ? ORDER BY expires_at, id LIMIT ?",
            (now, limit),
        )
        return [vid for (vid,) in rows]


class SqliteStore(RuleSteps):
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
                )
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
                        op.error = StoreUnavailable(may_have_run=False)  # never begun
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

    async def _step(
        self, fn: Callable[Concatenate[State, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        events = self._events_on
        return await self._call(lambda conn: fn(_Sql(conn, events), *args, **kwargs))

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
