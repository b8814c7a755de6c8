"""In-process store: the readable reference of what every OtpStore does.

Read this module to learn the store semantics; ``sqlite.py`` (SQL) and
``redis.py`` (Lua) implement the same rules, and the equivalence test runs
random sequences of operations against all three and requires identical
answers. It is not for production: its state lives in one process (workers
would not share limits), it is lost on restart, and nothing is purged except
an entry an operation touches after it lapsed. It serves fast unit tests.

**Atomicity.** Every operation runs from start to end without an ``await``,
so on one event loop it is one indivisible step, as one Lua script is on
Redis and one ``BEGIN IMMEDIATE`` transaction on SQLite.

**Time.** Each operation takes ``now`` (seconds, the caller's clock); the wall
clock is never read. An entry is live while ``now < expires_at`` and
everything lapsed is treated as absent. ``undo_issue`` has no ``now``: it acts
on what is stored (the service calls it seconds after the issue, long before
anything it touches lapses). That is the one place the stores may differ: after
the code's lifetime Redis has forgotten it and refunds nothing, while this
store and SQLite still find it and refund.

**What is kept.**

- per phone: the *code* (hash, or None for a code-less record; attempts;
  expiry), the resend *cooldown* (its end), the *failures* (consecutive failed
  verifies, the last one's time, expiry);
- per (kind, scope, window index): a *counter* of sends, for quotas and surge
  guards alike, and a *member set*, for distinct quotas. A counter lives until
  the end of the window after its own, where it is the sliding baseline; a set
  only until the end of its window;
- per (kind, scope): a surge *block* (its end);
- per request-window key: a fixed-window *hit counter* and the window's end.

**issue(request, now, window).** The request window, when given, is counted
first; over its limit the answer is ``Refused("rate_limited")`` and nothing
else happens. Then the checks, in this order; the first refusal wins and
charges nothing:

1. a live surge block on any guard's scope: refused until the block ends;
2. a live cooldown on the phone: refused until it ends;
3. each quota, a sliding-window counter: refused when
   ``sliding_count(previous, current) + 1 > limit``; the wait is
   ``seconds_until_allowed``;
4. each distinct quota: refused when the member is new to this window's set
   and the set already holds ``limit`` members; the wait is the rest of the
   window;
5. each surge guard: refused when ``current + 1 > max(min_sends, factor *
   previous)`` (fixed windows); this refusal also blocks the scope for
   ``block_seconds``, the one thing a refusal writes.

When all pass, the send is charged: the phone's code is replaced (new hash,
zero attempts, expires ``now + ttl``), the cooldown starts (when positive),
every quota and surge counter of the current window rises by one, and the
member joins each distinct set. ``Issued.new_members`` says which sets it
joined, so an undo gives back only those places.

**undo_issue(issued).** When the phone's stored code is still this hash: the
code and the cooldown go, every counter the issue charged (in the issue's own
window) drops by one, and the members it added leave their sets. A newer
send's code and charges are left alone.

**begin_verify(phone, ttl, now, lockout, window).** The window as in issue;
over it the attempt comes back with ``attempts == 0`` and nothing else is
counted. Then the lockout: with ``n`` failures on record, the phone waits
``lockout.wait_seconds(n)`` after the last failure; while it waits the
answer is ``locked_for`` seconds and nothing is counted. Otherwise one
attempt is counted on the live code, or on a code-less record (created, or
restarted when lapsed, to live ``ttl``), and one failure is recorded at
``now``, all before the caller compares anything. Failures against a live
code are remembered ``lockout.memory_seconds``; a guess at a phone without
one only as long as a code would live (``now + ttl``, never shortening).

**consume(phone, hash, now).** When the live code is this hash it is deleted
and the failures are cleared: True, for exactly one caller.

**hit_window(window, now).** Counts one hit: the first hit, or the first after
the window ended, starts a window of ``window_ms``; the answer is the count
and the whole milliseconds left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from otpgate.domain.limits import (
    Lockout,
    seconds_until_allowed,
    seconds_until_window_ends,
    sliding_count,
    window_index,
)
from otpgate.domain.ports import Attempt, Issued, Refused, RequestWindow, SendRequest, WindowHit


class _Expiring(Protocol):
    expires_at: float


E = TypeVar("E", bound=_Expiring)
K = TypeVar("K")


@dataclass(slots=True)
class _Code:
    code_hash: bytes | None  # None: a code-less record, counting guesses
    attempts: int
    expires_at: float


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    expires_at: float


@dataclass(slots=True)
class _Counter:
    count: int
    expires_at: float


@dataclass(slots=True)
class _Members:
    members: set[str]
    expires_at: float


@dataclass(slots=True)
class _Until:
    """A cooldown or a surge block: live until ``expires_at``."""

    expires_at: float


# (kind, scope, window index): one window's counter or member set.
_Slot = tuple[str, str, int]


def _live(entries: dict[K, E], key: K, now: float) -> E | None:
    """The entry if it is live at ``now``; a lapsed one is dropped."""
    entry = entries.get(key)
    if entry is not None and entry.expires_at <= now:
        del entries[key]
        return None
    return entry


class MemoryStore:
    def __init__(self) -> None:
        self._codes: dict[str, _Code] = {}
        self._cooldowns: dict[str, _Until] = {}
        self._failures: dict[str, _Failures] = {}
        self._counters: dict[_Slot, _Counter] = {}
        self._sets: dict[_Slot, _Members] = {}
        self._blocks: dict[tuple[str, str], _Until] = {}
        self._windows: dict[str, _Counter] = {}

    # -- operations --------------------------------------------------------------------
    async def issue(
        self, request: SendRequest, now: float, window: RequestWindow | None = None
    ) -> Issued | Refused:
        hit = self._count_window(window, now) if window is not None else None
        if hit is not None and window is not None and hit.over(window):
            return Refused("rate_limited", hit.reset_seconds, hit)
        refused = self._refusal(request, now)
        if refused is not None:
            return replace(refused, window_hit=hit)
        return replace(self._charge(request, now), window_hit=hit)

    async def undo_issue(self, issued: Issued) -> None:
        request, now = issued.request, issued.now
        code = self._codes.get(request.phone)
        if code is None or code.code_hash != request.code_hash:
            return  # consumed, or replaced by a newer send: not ours to refund
        del self._codes[request.phone]
        self._cooldowns.pop(request.phone, None)
        for kind, scope, window in request.counters():
            slot = (kind, scope, window_index(now, window))
            counter = self._counters.get(slot)
            if counter is not None:
                counter.count -= 1
                if counter.count <= 0:
                    del self._counters[slot]
        for d, new in zip(request.distinct, issued.new_members, strict=False):
            members = self._sets.get((d.kind, d.key, window_index(now, d.window_seconds)))
            if new and members is not None:
                members.members.discard(d.member)

    async def begin_verify(
        self,
        phone: str,
        ttl_seconds: int,
        now: float,
        lockout: Lockout,
        window: RequestWindow | None = None,
    ) -> Attempt:
        hit = self._count_window(window, now) if window is not None else None
        if hit is not None and window is not None and hit.over(window):
            return Attempt(attempts=0, code_hash=None, window_hit=hit)

        failures = _live(self._failures, phone, now)
        count, last, remembered_until = (
            (failures.count, failures.last, failures.expires_at) if failures else (0, 0.0, 0.0)
        )
        wait = lockout.wait_seconds(count)
        if wait and last + wait > now:
            locked_for = max(1, math.ceil(last + wait - now))
            return Attempt(attempts=0, code_hash=None, locked_for=locked_for, window_hit=hit)

        code = _live(self._codes, phone, now)
        if code is None:
            # No live code: a guess counts like one at a code, on a record of its own.
            code = self._codes[phone] = _Code(None, 0, now + ttl_seconds)
        code.attempts += 1
        if code.code_hash is not None:
            remembered_until = now + lockout.memory_seconds
        else:
            remembered_until = max(remembered_until, now + ttl_seconds)
        self._failures[phone] = _Failures(count + 1, now, remembered_until)
        return Attempt(attempts=code.attempts, code_hash=code.code_hash, window_hit=hit)

    async def consume(self, phone: str, code_hash: bytes, now: float) -> bool:
        code = _live(self._codes, phone, now)
        if code is None or code.code_hash != code_hash:
            return False
        del self._codes[phone]
        self._failures.pop(phone, None)
        return True

    async def hit_window(self, window: RequestWindow, now: float) -> WindowHit:
        return self._count_window(window, now)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- the steps ---------------------------------------------------------------------
    def _count_window(self, window: RequestWindow, now: float) -> WindowHit:
        counter = _live(self._windows, window.key, now)
        if counter is None:
            counter = self._windows[window.key] = _Counter(0, now + window.window_ms / 1000)
        counter.count += 1
        return WindowHit(counter.count, reset_after_ms=round((counter.expires_at - now) * 1000))

    def _count(self, slot: _Slot, now: float) -> int:
        counter = _live(self._counters, slot, now)
        return counter.count if counter is not None else 0

    def _refusal(self, request: SendRequest, now: float) -> Refused | None:
        for g in request.surges:
            block = _live(self._blocks, (g.kind, g.key), now)
            if block is not None:
                return Refused(g.kind, max(1, math.ceil(block.expires_at - now)))

        cooldown = _live(self._cooldowns, request.phone, now)
        if cooldown is not None:
            return Refused("resend_cooldown", max(1, math.ceil(cooldown.expires_at - now)))

        for q in request.quotas:
            idx = window_index(now, q.window_seconds)
            prev = self._count((q.kind, q.key, idx - 1), now)
            cur = self._count((q.kind, q.key, idx), now)
            if sliding_count(prev, cur, now, q.window_seconds) + 1 > q.limit:
                return Refused(
                    q.kind, seconds_until_allowed(prev, cur, q.limit, now, q.window_seconds)
                )

        for d in request.distinct:
            members = _live(self._sets, (d.kind, d.key, window_index(now, d.window_seconds)), now)
            known = members.members if members is not None else set()
            if d.member not in known and len(known) >= d.limit:
                return Refused(d.kind, seconds_until_window_ends(now, d.window_seconds))

        for g in request.surges:
            idx = window_index(now, g.window_seconds)
            prev = self._count((g.kind, g.key, idx - 1), now)
            cur = self._count((g.kind, g.key, idx), now)
            if cur + 1 > g.allowed(prev):
                self._blocks[(g.kind, g.key)] = _Until(now + g.block_seconds)
                return Refused(g.kind, g.block_seconds)
        return None

    def _charge(self, request: SendRequest, now: float) -> Issued:
        self._codes[request.phone] = _Code(request.code_hash, 0, now + request.ttl_seconds)
        if request.cooldown_seconds > 0:
            self._cooldowns[request.phone] = _Until(now + request.cooldown_seconds)
        for kind, scope, window in request.counters():
            idx = window_index(now, window)
            # Lives through the next window too, where it is the sliding baseline.
            expires_at = (idx + 2) * window
            counter = _live(self._counters, (kind, scope, idx), now)
            if counter is None:
                self._counters[(kind, scope, idx)] = _Counter(1, expires_at)
            else:
                counter.count += 1
                counter.expires_at = expires_at
        added = []
        for d in request.distinct:
            idx = window_index(now, d.window_seconds)
            members = _live(self._sets, (d.kind, d.key, idx), now)
            if members is None:
                members = self._sets[(d.kind, d.key, idx)] = _Members(
                    set(), (idx + 1) * d.window_seconds
                )
            added.append(d.member not in members.members)
            members.members.add(d.member)
        return Issued(request, now, tuple(added))

    # -- for tests that drive the clock ------------------------------------------------
    def deadlines(self, lockout: Lockout | None = None) -> list[float]:
        """Every instant at which something held here lapses, sorted; with ``lockout``,
        also when each phone's lockout wait ends. The boundaries where an answer can
        change, for a test that moves the clock to land on them."""
        held: list[dict[Any, Any]] = [
            self._codes,
            self._cooldowns,
            self._failures,
            self._counters,
            self._sets,
            self._blocks,
            self._windows,
        ]
        instants = {entry.expires_at for entries in held for entry in entries.values()}
        if lockout is not None:
            for failures in self._failures.values():
                wait = lockout.wait_seconds(failures.count)
                if wait:
                    instants.add(failures.last + wait)
        return sorted(instants)
