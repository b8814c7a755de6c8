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
everything lapsed is treated as absent. ``void_issue`` is given the issue's
``now`` (to find the windows it charged), not the time it runs: it acts on what
is stored (the service calls it soon after the issue, long before anything it
touches lapses). That is the one place the stores may differ: after the code's
lifetime Redis has forgotten it and refunds nothing, while this store and
SQLite still find it and refund. The quotas' sliding windows count in
whole milliseconds, ``to_ms(now)`` (rounded), the integers Redis is given, with
the arithmetic of ``otpgate.domain.limits`` (which Redis's Lua mirrors).

**What is kept.**

- per phone: the *code* (hash, or None for a code-less record; attempts;
  expiry; the ``send_id`` that stored it and which distinct sets it joined),
  the resend *cooldown* (its end), the *failures* (consecutive failed verifies,
  the last one's time, expiry);
- per (phone, send id): a *void mark*, live ``reach_seconds`` after the send,
  for a voided send whose issue step had not run;
- per verification id: the *verification record* (phone, purpose, channel,
  stored status, times), live until ``retention_seconds`` after its code's
  expiry; its code carries its id;
- per quota with ``buckets == 0`` (kind, scope): a *sliding log*, one entry per
  send (its time in ms, its ``send_id``). An entry is in the window while
  ``at > now - window`` and leaves the log when it is not;
- per quota with ``buckets == k`` (kind, scope, sub-window index ``j``): a
  *sub-window counter* of the sends in ``[j * width, (j + 1) * width)``,
  ``width = window // k``, live until ``bucket_leaves(j)`` (a window after its
  end), when no send counts it any more;
- per surge guard (kind, scope, fixed window index): a *counter* of sends,
  living until the end of the window after its own, where it is the baseline;
- per distinct quota (kind, scope, fixed window index): a *member set*, live
  until the end of its window;
- per (kind, scope): a surge *block* (its end);
- per request-window key: a fixed-window *hit counter* and the window's end.

**issue(request, now, window).** The request window, when given, is counted
first; over its limit the answer is ``Refused("rate_limited")`` and nothing
else happens. A send with a live void mark then raises ``StoreUnavailable``
and nothing else happens. Then the checks, in this order; the first refusal
wins and charges nothing:

1. a live surge block on any guard's scope: refused until the block ends;
2. a live cooldown on the phone: refused until it ends;
3. each quota: ``wait`` is ``log_wait(times in the window, ...)`` for a sliding
   log, ``buckets_wait(counts of buckets_counted(now), ...)`` for sub-windows,
   in ms; refused when ``wait > 0``, after ``retry_seconds(wait)`` (rounded up,
   at least 1), which is exactly when one more send fits if nothing else is
   sent. A log allows at most ``limit`` sends in any span of the window (times
   less than a window apart). Sub-windows count every one that overlaps
   ``(now - window, now]``, a span of at most ``window + width``: never more
   than ``limit`` in any span of the window either, but a send may be refused
   up to one ``width`` before a log would allow it;
4. each distinct quota: refused when the member is new to this window's set
   and the set already holds ``limit`` members; the wait is the rest of the
   window;
5. each surge guard: refused when ``current + 1 > max(min_sends, factor *
   previous)`` (fixed windows); this refusal also blocks the scope for
   ``block_seconds``, the one thing a refusal writes.

When all pass, the send is charged: the phone's code is replaced (new hash,
zero attempts, expires ``now + ttl``), the cooldown starts (when positive),
the send joins each sliding log (an entry of the same ``send_id`` is replaced),
each quota's current sub-window and each surge guard's current window rise by
one, and the member joins each distinct set. The code records the send's id and
which sets it joined, so a void gives back only those places. When the
request names a verification, its record is created ``pending`` (expiring with
the code, holding ``details`` and the send's time) and the code carries its id;
the answer names it. With ``resume``, when the code being replaced was live and
its verification is still stored ``pending`` with this request's purpose,
channel and details, the new code joins that verification instead: its
created time stays, it is updated at ``now``, expires with the new code, and
adds ``now`` to its send times (the last ``SENDS_KEPT``); the answer names it.

**void_issue(request, now).** When the phone's stored code is this send's (by
``send_id``): the code and the cooldown go, the send's entry leaves each sliding
log (another send at the same instant stays), every counter the issue charged
(its own sub-window and fixed window) drops by one, the members it added
leave their sets, and the send's verification turns ``failed``. Otherwise
(never issued yet, consumed, or replaced by a newer send, whose code and charges
are left alone) the send's void mark is set, live until ``now +
request.reach_seconds``, so an issue of it that has not run yet never will.

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

**consume(phone, hash, now, verification_id).** When the live code is this hash
it is deleted, the failures are cleared, and its verification (when it is the
one named, and still pending) turns ``approved``: True, for exactly one caller.

**get_verification(id, now).** The record, if held, with its status as of
``now`` (``Verification.seen_at``: a pending one is ``expired`` once its code's
time is up, ``canceled`` when the phone's code is no longer its own).

**finish_verification(id, status, now).** A record pending as of ``now`` takes
``status`` (updated at ``now``); ``canceled`` and ``approved`` also delete the
phone's code, which is this verification's. Any other record is returned as it
stands.

**blocks(now), lift_block(kind, scope, now).** A surge or conversion block is
recorded with what set it; a lockout when a failure locks the phone. Listed while
in force. Lifting a range's block leaves it in *grace* until it would have ended:
meanwhile the range's surge and conversion guards neither refuse nor block it
again. Lifting a lockout forgets the phone's failures.

**hit_window(window, now).** Counts one hit: the first hit, or the first after
the window ended, starts a window of ``window_ms``; the answer is the count
and the whole milliseconds left.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.events import EVENT_NAMES, block_data, verification_data
from otpgate.domain.limits import (
    DAY_BUCKETS_KEPT,
    HOUR,
    RANGE_DENIED,
    STAT_BUCKETS_KEPT,
    Lockout,
    Quota,
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


class _Expiring(Protocol):
    expires_at: float


E = TypeVar("E", bound=_Expiring)
K = TypeVar("K")


@dataclass(slots=True)
class _Code:
    code_hash: bytes | None  # None: a code-less record, counting guesses
    attempts: int
    expires_at: float
    send_id: str = ""  # the send that stored it ("" for a code-less record)
    new_members: tuple[bool, ...] = ()  # per distinct quota: did the send add its member
    verification_id: str = ""
    sent_at: float = 0.0  # when the send was charged (its range buckets)


@dataclass(slots=True)
class _RangeCounts:
    """A range's sends and approvals (by the send's bucket): per stat bucket, per hour."""

    sends: dict[int, int] = field(default_factory=dict)
    approvals: dict[int, int] = field(default_factory=dict)
    day_sends: dict[int, int] = field(default_factory=dict)
    day_approvals: dict[int, int] = field(default_factory=dict)
    expires_at: float = 0.0

    def add(self, sent_at: float, field_name: str, by: int) -> None:
        j, h = stat_bucket(sent_at), day_bucket(sent_at)
        five = self.sends if field_name == "sends" else self.approvals
        day = self.day_sends if field_name == "sends" else self.day_approvals
        five[j] = five.get(j, 0) + by
        day[h] = day.get(h, 0) + by
        for counts, oldest in ((five, j - STAT_BUCKETS_KEPT), (day, h - DAY_BUCKETS_KEPT)):
            for stale in [k for k in counts if k <= oldest or counts[k] <= 0]:
                del counts[stale]


def _range_expiry(now: float) -> float:
    return (day_bucket(now) + DAY_BUCKETS_KEPT) * HOUR


@dataclass(slots=True)
class _Record:
    verification: Verification
    expires_at: float  # the code's expiry + retention


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


@dataclass(order=True, slots=True)
class _Logged:
    """One send in a sliding log: its time (ms) and the send's id."""

    at_ms: int
    send_id: str
    window_ms: int = field(compare=False)  # when it lapses (for ``deadlines``)


@dataclass(slots=True)
class _Until:
    """A cooldown or a surge block: live until ``expires_at``. A lifted block stays as
    ``grace`` until then: its range's guards do not block it again meanwhile."""

    expires_at: float
    grace: bool = False


# (kind, scope, window index): one window's counter or member set.
_Slot = tuple[str, str, int]
# (kind, scope): one quota's sliding log.
_Scope = tuple[str, str]


def _live(entries: dict[K, E], key: K, now: float) -> E | None:
    """The entry if it is live at ``now``; a lapsed one is dropped."""
    entry = entries.get(key)
    if entry is not None and entry.expires_at <= now:
        del entries[key]
        return None
    return entry


def _bucket(q: Quota, now_ms: int) -> _Slot:
    """The sub-window of ``q`` that a send at ``now_ms`` is charged to."""
    return (q.kind, q.key, bucket_index(now_ms, q.window_ms, q.buckets))


def _increment(counters: dict[_Slot, _Counter], slot: _Slot, expires_at: float, now: float) -> None:
    counter = _live(counters, slot, now)
    if counter is None:
        counters[slot] = _Counter(1, expires_at)
    else:
        counter.count += 1
        counter.expires_at = expires_at


def _decrement(counters: dict[_Slot, _Counter], slot: _Slot) -> None:
    counter = counters.get(slot)
    if counter is not None:
        counter.count -= 1
        if counter.count <= 0:
            del counters[slot]


class MemoryStore:
    def __init__(self, *, events: bool = False) -> None:
        self._events_on = events
        self._events: list[Event] = []
        self._delivered = 0  # events before this index are delivered
        self._lease: tuple[str, float] = ("", 0.0)  # owner, until
        self._awaiting: dict[str, float] = {}  # pending verification id: its code's end
        self._codes: dict[str, _Code] = {}
        self._cooldowns: dict[str, _Until] = {}
        self._failures: dict[str, _Failures] = {}
        self._counters: dict[_Slot, _Counter] = {}  # surge guards' fixed windows
        self._buckets: dict[_Slot, _Counter] = {}  # quotas' sub-windows
        self._logs: dict[_Scope, list[_Logged]] = {}  # quotas' sliding logs, oldest first
        self._sets: dict[_Slot, _Members] = {}
        self._blocks: dict[tuple[str, str], _Until] = {}
        self._windows: dict[str, _Counter] = {}
        self._voided: dict[tuple[str, str], _Until] = {}  # (phone, send id)
        self._records: dict[str, _Record] = {}  # by verification id
        self._ranges: dict[str, _RangeCounts] = {}  # by range (prefix:…, country:…)
        self._overrides: dict[OverrideList, set[str]] = {"exempt": set(), "deny": set()}
        self._registry: dict[tuple[str, str], Block] = {}  # (kind, scope): what set it

    # -- operations --------------------------------------------------------------------
    async def issue(
        self, request: SendRequest, now: float, window: RequestWindow | None = None
    ) -> Issued | Refused:
        hit = self._count_window(window, now) if window is not None else None
        if hit is not None and window is not None and hit.over(window):
            return Refused("rate_limited", hit.reset_seconds, hit)
        if _live(self._voided, (request.phone, request.send_id), now) is not None:
            raise StoreUnavailable()
        refused = self._refusal(request, now)
        if refused is not None:
            return replace(refused, window_hit=hit)
        return replace(self._charge(request, now), window_hit=hit)

    async def void_issue(self, request: SendRequest, now: float) -> None:
        code = self._codes.get(request.phone)
        if code is None or code.send_id != request.send_id:
            # Not issued yet (or consumed, or replaced): make sure it never is.
            self._voided[(request.phone, request.send_id)] = _Until(now + request.reach_seconds)
            return
        del self._codes[request.phone]
        self._finished(code.verification_id, "failed", now)
        self._cooldowns.pop(request.phone, None)
        for q in request.quotas:
            if q.buckets:
                _decrement(self._buckets, _bucket(q, to_ms(now)))
            else:
                log = self._logs.get((q.kind, q.key), [])
                log[:] = [e for e in log if e.send_id != request.send_id]
                if not log:
                    self._logs.pop((q.kind, q.key), None)
        for g in request.surges:
            _decrement(self._counters, (g.kind, g.key, window_index(now, g.window_seconds)))
        for d, new in zip(request.distinct, code.new_members, strict=False):
            members = self._sets.get((d.kind, d.key, window_index(now, d.window_seconds)))
            if new and members is not None:
                members.members.discard(d.member)
        for scope in request.ranges:
            counts = self._ranges.get(scope)
            if counts is not None:
                counts.add(now, "sends", -1)

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
        locked = lockout.wait_seconds(count + 1)
        if locked:
            # A failure that locks the phone: operators see it among the blocks.
            block = Block(
                lockout.kind, phone, "failures", now, now + locked, {"failures": count + 1}
            )
            self._registry[(lockout.kind, phone)] = block
            self._emit("block.created", block_data(block), now)
        return Attempt(
            attempts=code.attempts,
            code_hash=code.code_hash,
            window_hit=hit,
            verification_id=code.verification_id,
        )

    async def consume(
        self,
        phone: str,
        code_hash: bytes,
        now: float,
        verification_id: str = "",
        ranges: Sequence[str] = (),
    ) -> bool:
        code = _live(self._codes, phone, now)
        if code is None or code.code_hash != code_hash:
            return False
        del self._codes[phone]
        self._failures.pop(phone, None)
        self._registry = {k: b for k, b in self._registry.items() if k[1] != phone}
        for scope in ranges:
            counts = self._ranges.get(scope)
            if counts is not None and counts.expires_at > now:
                counts.add(code.sent_at, "approvals", 1)
        record = self._records.get(code.verification_id)
        named = verification_id == code.verification_id and record is not None
        if named and record is not None and record.verification.status == "pending":
            self._finished(verification_id, "approved", now)
        return True

    async def get_verification(self, verification_id: str, now: float) -> Verification | None:
        record = _live(self._records, verification_id, now)
        if record is None:
            return None
        return record.verification.seen_at(now, self._current(record.verification, now))

    async def finish_verification(
        self, verification_id: str, status: VerificationStatus, now: float
    ) -> Verification | None:
        seen = await self.get_verification(verification_id, now)
        if seen is None or seen.status != "pending":
            return seen
        if status in ("canceled", "approved"):
            del self._codes[seen.phone]  # pending: the phone's live code is its own
        return self._finished(verification_id, status, now)

    def _finished(
        self, verification_id: str, status: VerificationStatus, now: float
    ) -> Verification | None:
        """Set a final status, and tell of it."""
        record = self._set_status(verification_id, status, now)
        if record is not None:
            self._awaiting.pop(verification_id, None)
            self._emit(f"verification.{EVENT_NAMES[status]}", verification_data(record), now)
        return record

    def _emit(self, type: str, data: dict[str, Any], now: float) -> None:
        if self._events_on:
            self._events.append(Event(str(len(self._events) + 1), type, now, data))

    async def set_channel(self, verification_id: str, channel: str) -> None:
        record = self._records.get(verification_id)
        if record is not None:
            record.verification = replace(record.verification, channel=channel)

    def _current(self, verification: Verification, now: float) -> bool:
        code = _live(self._codes, verification.phone, now)
        return code is not None and code.verification_id == verification.id

    def _set_status(
        self, verification_id: str, status: VerificationStatus, now: float
    ) -> Verification | None:
        record = self._records.get(verification_id) if verification_id else None
        if record is None:
            return None
        record.verification = replace(record.verification, status=status, updated_at=now)
        return record.verification

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

    def _log(self, q: Quota, now_ms: int) -> list[_Logged]:
        """The quota's log, without the sends that have left its window."""
        log = [e for e in self._logs.pop((q.kind, q.key), []) if e.at_ms > now_ms - q.window_ms]
        if log:
            self._logs[(q.kind, q.key)] = log
        return log

    def _quota_wait(self, q: Quota, now: float) -> int:
        """ms until one more send fits under ``q`` (0: it fits now)."""
        now_ms = to_ms(now)
        if not q.buckets:
            times = [e.at_ms for e in self._log(q, now_ms)]
            return log_wait(times, q.limit, q.window_ms, now_ms)
        counted = buckets_counted(now_ms, q.window_ms, q.buckets)
        counts = []
        for j in counted:
            counter = _live(self._buckets, (q.kind, q.key, j), now)
            counts.append(counter.count if counter is not None else 0)
        return buckets_wait(counts, counted.start, q.limit, q.window_ms, q.buckets, now_ms)

    def _refusal(self, request: SendRequest, now: float) -> Refused | None:
        if any(entry in self._overrides["deny"] for entry in request.overrides):
            return Refused(RANGE_DENIED, 0)
        exempt = any(entry in self._overrides["exempt"] for entry in request.overrides)
        surges = () if exempt else request.surges
        conversions = () if exempt else request.conversions
        for kind, key in [(g.kind, g.key) for g in surges] + [(c.kind, c.key) for c in conversions]:
            block = _live(self._blocks, (kind, key), now)
            if block is not None and not block.grace:
                return Refused(kind, max(1, math.ceil(block.expires_at - now)))
        surges = [g for g in surges if not self._in_grace(g.kind, g.key, now)]
        conversions = [c for c in conversions if not self._in_grace(c.kind, c.key, now)]

        cooldown = _live(self._cooldowns, request.phone, now)
        if cooldown is not None:
            return Refused("resend_cooldown", max(1, math.ceil(cooldown.expires_at - now)))

        for q in request.quotas:
            wait_ms = self._quota_wait(q, now)
            if wait_ms > 0:
                return Refused(q.kind, retry_seconds(wait_ms))

        for d in request.distinct:
            members = _live(self._sets, (d.kind, d.key, window_index(now, d.window_seconds)), now)
            known = members.members if members is not None else set()
            if d.member not in known and len(known) >= d.limit:
                return Refused(d.kind, seconds_until_window_ends(now, d.window_seconds))

        for g in surges:
            idx = window_index(now, g.window_seconds)
            prev = self._count((g.kind, g.key, idx - 1), now)
            cur = self._count((g.kind, g.key, idx), now)
            if cur + 1 > g.allowed(prev):
                counts = {"sends": cur + 1, "previous": prev}
                return self._block(g.kind, g.key, "surge", now, g.block_seconds, counts)

        for c in conversions:
            sends, approvals = self._settled(c.key, now, c.settle_seconds)
            if c.too_low(sends, approvals):
                counts = {"sends": sends, "approvals": approvals}
                return self._block(c.kind, c.key, "conversion", now, c.block_seconds, counts)
        return None

    def _in_grace(self, kind: str, key: str, now: float) -> bool:
        block = _live(self._blocks, (kind, key), now)
        return block is not None and block.grace

    def _block(
        self, kind: str, key: str, reason: str, now: float, seconds: int, counts: dict[str, int]
    ) -> Refused:
        self._blocks[(kind, key)] = _Until(now + seconds)
        block = Block(kind, key, reason, now, now + seconds, counts)
        self._registry[(kind, key)] = block
        self._emit("block.created", block_data(block), now)
        return Refused(kind, seconds)

    def _settled(self, scope: str, now: float, settle_seconds: int) -> tuple[int, int]:
        """A range's sends and approvals in the buckets its conversion guard weighs."""
        counts = _live(self._ranges, scope, now)
        if counts is None:
            return 0, 0
        weighed = settled_buckets(to_ms(now), settle_seconds * 1000)
        return (
            sum(counts.sends.get(j, 0) for j in weighed),
            sum(counts.approvals.get(j, 0) for j in weighed),
        )

    def _supersede(self, phone: str, now: float) -> None:
        """A newer send replaces the phone's live code: its pending verification is
        canceled from now on (``Verification.seen_at``); with events on, say so."""
        code = _live(self._codes, phone, now)
        if not (self._events_on and code is not None and code.verification_id):
            return
        record = self._records.get(code.verification_id)
        if record is not None and record.verification.status == "pending":
            self._awaiting.pop(record.verification.id, None)
            seen = replace(record.verification, status="canceled")
            self._emit("verification.canceled", verification_data(seen), now)

    def _resumable(self, request: SendRequest, now: float) -> _Record | None:
        """The pending verification this send continues (``request.resume``), if any."""
        if not (request.resume and request.verification_id):
            return None
        code = _live(self._codes, request.phone, now)
        if code is None or not code.verification_id:
            return None
        record = self._records.get(code.verification_id)
        if record is None:
            return None
        v = record.verification
        same = (v.purpose, v.channel, v.details) == (
            request.purpose,
            request.channel,
            request.details,
        )
        return record if same and v.status == "pending" and v.expires_at > now else None

    def _charge(self, request: SendRequest, now: float) -> Issued:
        expires_at = now + request.ttl_seconds
        resumed = self._resumable(request, now)  # before the code is replaced
        if resumed is None:
            self._supersede(request.phone, now)
        code = _Code(request.code_hash, 0, expires_at, request.send_id, sent_at=now)
        self._codes[request.phone] = code
        for scope in request.ranges:
            counts = _live(self._ranges, scope, now) or _RangeCounts()
            counts.add(now, "sends", 1)
            counts.expires_at = _range_expiry(now)
            self._ranges[scope] = counts
        if resumed is not None:
            v = resumed.verification
            code.verification_id = v.id
            resumed.verification = replace(
                v,
                updated_at=now,
                expires_at=expires_at,
                send_times=(*v.send_times, now)[-SENDS_KEPT:],
            )
            resumed.expires_at = expires_at + request.retention_seconds
            self._awaiting[v.id] = expires_at
        elif request.verification_id:
            code.verification_id = request.verification_id
            record = Verification(
                id=request.verification_id,
                phone=request.phone,
                status="pending",
                channel=request.channel,
                purpose=request.purpose,
                created_at=now,
                updated_at=now,
                expires_at=expires_at,
                details=request.details,
                send_times=(now,),
            )
            self._records[record.id] = _Record(record, expires_at + request.retention_seconds)
            if self._events_on:
                self._awaiting[record.id] = expires_at
        if request.cooldown_seconds > 0:
            self._cooldowns[request.phone] = _Until(now + request.cooldown_seconds)
        now_ms = to_ms(now)
        for q in request.quotas:
            if q.buckets:
                slot = _bucket(q, now_ms)
                leaves_ms = bucket_leaves(slot[2], q.window_ms, q.buckets)
                _increment(self._buckets, slot, leaves_ms / 1000, now)
            else:
                log = self._logs.setdefault((q.kind, q.key), [])
                log[:] = [e for e in log if e.send_id != request.send_id]  # an id is one entry
                bisect.insort(log, _Logged(now_ms, request.send_id, q.window_ms))
        for g in request.surges:
            idx = window_index(now, g.window_seconds)
            # Lives through the next window too, where it is the baseline.
            _increment(self._counters, (g.kind, g.key, idx), (idx + 2) * g.window_seconds, now)
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
        code.new_members = tuple(added)
        return Issued(request, now, verification_id=code.verification_id)

    # -- what operators see and undo (DefenceStore) ------------------------------------
    async def blocks(self, now: float) -> list[Block]:
        live = []
        for (kind, scope), block in list(self._registry.items()):
            if block.ends_at <= now or not self._in_force(kind, scope, now):
                del self._registry[(kind, scope)]
            else:
                live.append(block)
        return sorted(live, key=lambda b: (b.started_at, b.kind, b.scope))

    def _in_force(self, kind: str, scope: str, now: float) -> bool:
        if (kind, scope) in self._blocks:
            block = _live(self._blocks, (kind, scope), now)
            return block is not None and not block.grace
        return _live(self._failures, scope, now) is not None  # a lockout

    async def lift_block(self, kind: str, scope: str, now: float) -> Block | None:
        live = {(b.kind, b.scope): b for b in await self.blocks(now)}
        block = live.get((kind, scope))
        if block is None:
            return None
        del self._registry[(kind, scope)]
        if (kind, scope) in self._blocks:
            # Until it would have ended, the range's guards let it be.
            self._blocks[(kind, scope)] = _Until(block.ends_at, grace=True)
        else:
            self._failures.pop(scope, None)
        return block

    async def phone_state(self, phone: str, now: float, sends: Quota) -> PhoneState:
        code = _live(self._codes, phone, now)
        pending = code is not None and code.code_hash is not None
        cooldown = _live(self._cooldowns, phone, now)
        failures = _live(self._failures, phone, now)
        record = None
        if code is not None and code.verification_id:
            record = await self.get_verification(code.verification_id, now)
        return PhoneState(
            phone=phone,
            code_pending=pending,
            code_expires_at=code.expires_at if pending and code is not None else None,
            attempts=code.attempts if pending and code is not None else 0,
            cooldown_until=cooldown.expires_at if cooldown is not None else None,
            sends_in_window=len(self._log(sends, to_ms(now))),
            failures=failures.count if failures is not None else 0,
            last_failure_at=failures.last if failures is not None else None,
            verification=record,
        )

    async def set_override(self, which: OverrideList, entry: str, present: bool) -> bool:
        entries = self._overrides[which]
        if (entry in entries) == present:
            return False
        if present:
            entries.add(entry)
        else:
            entries.discard(entry)
        return True

    async def overrides(self) -> dict[OverrideList, list[str]]:
        return {which: sorted(entries) for which, entries in self._overrides.items()}

    async def range_stats(self, now: float) -> list[RangeStats]:
        j, h = stat_bucket(now), day_bucket(now)
        hour, day = range(j - 11, j + 1), range(h - 23, h + 1)
        stats = []
        for scope, counts in sorted(self._ranges.items()):
            if counts.expires_at <= now:
                continue
            row = RangeStats(
                scope,
                sum(counts.sends.get(k, 0) for k in hour),
                sum(counts.approvals.get(k, 0) for k in hour),
                sum(counts.day_sends.get(k, 0) for k in day),
                sum(counts.day_approvals.get(k, 0) for k in day),
            )
            if row.day_sends:
                stats.append(row)
        return stats

    # -- events (EventLog) ---------------------------------------------------------------
    async def append_event(self, type: str, data: dict[str, Any], now: float) -> None:
        self._emit(type, data, now)

    async def next_events(
        self, owner: str, now: float, lease_seconds: float, limit: int
    ) -> list[Event] | None:
        holder, until = self._lease
        if holder != owner and until > now:
            return None
        self._lease = (owner, now + lease_seconds)
        return self._events[self._delivered : self._delivered + limit]

    async def ack_event(self, owner: str, event_id: str) -> None:
        if self._lease[0] != owner:
            return
        self._delivered = max(self._delivered, int(event_id))

    async def sweep_expired(self, now: float, limit: int) -> int:
        due = sorted((end, vid) for vid, end in self._awaiting.items() if end <= now)[:limit]
        for _, vid in due:
            del self._awaiting[vid]
            record = self._records.get(vid)
            if record is not None and record.verification.status == "pending":
                seen = replace(record.verification, status="expired")
                self._emit("verification.expired", verification_data(seen), now)
        return len(due)

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
            self._buckets,
            self._sets,
            self._blocks,
            self._windows,
            self._voided,
            self._records,
        ]
        instants = {entry.expires_at for entries in held for entry in entries.values()}
        # A pending verification turns expired with its code, even a replaced one.
        instants |= {r.verification.expires_at for r in self._records.values()}
        # Each logged send leaves its log on its own.
        instants |= {(e.at_ms + e.window_ms) / 1000 for log in self._logs.values() for e in log}
        if lockout is not None:
            for failures in self._failures.values():
                wait = lockout.wait_seconds(failures.count)
                if wait:
                    instants.add(failures.last + wait)
        return sorted(instants)
