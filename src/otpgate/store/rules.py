"""The store rules: what every OtpStore step decides and changes, written once.

Each step is a function over ``otpgate.store.state.State``, the few primitives a
backend implements (counters with deadlines, sliding logs, member sets, codes,
verification records, blocks, lists, an event queue). ``reference.MemoryStore``
runs them over dicts, ``sqlite.SqliteStore`` over SQL in one transaction; the Redis
store keeps them in Lua, one script per step (``redis/lua``), its own copy. The
equivalence test runs random sequences of operations against all three and requires
identical answers.

**Atomicity.** A step runs inside one atomic step of its backend: one
``BEGIN IMMEDIATE`` transaction on SQLite, a stretch without an ``await`` in
memory, as one Lua script is on Redis.

**Time.** Each operation takes ``now`` (seconds, the caller's clock); the wall
clock is never read. An entry is live while ``now < expires_at`` and
everything lapsed is treated as absent. ``void_issue`` is given the issue's
``now`` (to find the windows it charged), not the time it runs: it acts on what
is stored (the service calls it soon after the issue, long before anything it
touches lapses). That is the one place the stores may differ: after the code's
lifetime Redis has forgotten it and refunds nothing, while memory and
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

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from otpgate.domain import ports
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
    Issued,
    PhoneState,
    RangeStats,
    Refused,
    Verification,
    WindowHit,
)
from otpgate.store.state import Code, Record, State

# -- the keys of the state, by what they hold --------------------------------------------
RANGE_PREFIX = "r:"  # a range's sends and approvals per bucket (``range_key``)


def window_key(key: str) -> str:
    return f"w:{key}"


def cooldown_key(phone: str) -> str:
    return f"cd:{phone}"


def fails_key(phone: str) -> str:
    """A phone's consecutive failures; the counter's ``updated_at`` is the last one's time."""
    return f"fails:{phone}"


def void_key(phone: str, send_id: str) -> str:
    return f"void:{phone}:{send_id}"


def surge_key(kind: str, scope: str, index: int) -> str:
    """A surge guard's fixed window ``index``."""
    return f"q:{kind}:{scope}:{index}"


def bucket_key(kind: str, scope: str, index: int) -> str:
    """A quota's sub-window ``index``."""
    return f"s:{kind}:{scope}:{index}"


def log_key(kind: str, scope: str) -> str:
    """A quota's sliding log."""
    return f"{kind}:{scope}"


def set_key(kind: str, scope: str, index: int) -> str:
    """A distinct quota's member set of fixed window ``index``."""
    return f"d:{kind}:{scope}:{index}"


def block_key(kind: str, scope: str) -> str:
    """A range's block: 1 in force, 0 lifted (graced until it would have ended)."""
    return f"b:{kind}:{scope}"


def range_key(scope: str, which: str, bucket: int) -> str:
    """A range's count: ``s``/``a`` sends/approvals per stat bucket, ``S``/``A`` per hour."""
    return f"{RANGE_PREFIX}{which}:{scope}:{bucket}"


# -- issue -------------------------------------------------------------------------------
def issue(
    s: State, request: ports.SendRequest, now: float, window: ports.RequestWindow | None = None
) -> Issued | Refused | None:
    """None: the send was voided before it ran (the caller raises ``StoreUnavailable``);
    the window's hit stays counted, nothing else is."""
    hit = hit_window(s, window, now) if window is not None else None
    if hit is not None and window is not None and hit.over(window):
        return Refused("rate_limited", hit.reset_seconds, hit)
    if s.counter(void_key(request.phone, request.send_id), now) is not None:
        return None
    outcome = _refusal(s, request, now) or _charge(s, request, now)
    return replace(outcome, window_hit=hit)


def _refusal(s: State, request: ports.SendRequest, now: float) -> Refused | None:
    """The checks, in order; the first refusal wins (the Redis issue script's order)."""
    lists = s.listed(request.overrides) if request.overrides else set()
    if "deny" in lists:
        return Refused(RANGE_DENIED, 0)
    exempt = "exempt" in lists
    surges = () if exempt else tuple(request.surges)
    conversions = () if exempt else tuple(request.conversions)
    graced = set()
    for kind, key in [(g.kind, g.key) for g in surges] + [(c.kind, c.key) for c in conversions]:
        block = s.counter(block_key(kind, key), now)
        if block is not None and block.count:
            return Refused(kind, max(1, math.ceil(block.expires_at - now)))
        if block is not None:
            graced.add((kind, key))
    surges = tuple(g for g in surges if (g.kind, g.key) not in graced)
    conversions = tuple(c for c in conversions if (c.kind, c.key) not in graced)

    cooldown = s.counter(cooldown_key(request.phone), now)
    if cooldown is not None:
        return Refused("resend_cooldown", max(1, math.ceil(cooldown.expires_at - now)))

    for q in request.quotas:
        wait_ms = _quota_wait(s, q, now)
        if wait_ms > 0:
            return Refused(q.kind, retry_seconds(wait_ms))

    for d in request.distinct:
        key = set_key(d.kind, d.key, window_index(now, d.window_seconds))
        known, size = s.membership(key, d.member, now)
        if not known and size >= d.limit:
            return Refused(d.kind, seconds_until_window_ends(now, d.window_seconds))
    return _guard_refusal(s, surges, conversions, now)


def _guard_refusal(
    s: State, surges: Sequence[SurgeGuard], conversions: Sequence[ConversionGuard], now: float
) -> Refused | None:
    """The range rules, last: a surge or a low conversion refuses and blocks."""
    for g in surges:
        idx = window_index(now, g.window_seconds)
        prev, cur = s.counts([surge_key(g.kind, g.key, i) for i in (idx - 1, idx)], now)
        if cur + 1 > g.allowed(prev):
            counts = {"sends": cur + 1, "previous": prev}
            return _block(s, g.kind, g.key, "surge", now, g.block_seconds, counts)

    for c in conversions:
        sends, approvals = _settled(s, c.key, now, c.settle_seconds)
        if c.too_low(sends, approvals):
            counts = {"sends": sends, "approvals": approvals}
            return _block(s, c.kind, c.key, "conversion", now, c.block_seconds, counts)
    return None


def _quota_wait(s: State, q: Quota, now: float) -> int:
    """ms until one more send fits under ``q`` (0: it fits now)."""
    now_ms = to_ms(now)
    if not q.buckets:
        times = s.log_times(log_key(q.kind, q.key), now_ms - q.window_ms)
        return log_wait(times, q.limit, q.window_ms, now_ms)
    counted = buckets_counted(now_ms, q.window_ms, q.buckets)
    counts = s.counts([bucket_key(q.kind, q.key, j) for j in counted], now)
    return buckets_wait(counts, counted.start, q.limit, q.window_ms, q.buckets, now_ms)


def _settled(s: State, scope: str, now: float, settle_seconds: int) -> tuple[int, int]:
    """A range's sends and approvals in the buckets its conversion guard weighs."""
    weighed = settled_buckets(to_ms(now), settle_seconds * 1000)
    keys = [range_key(scope, which, j) for which in "sa" for j in weighed]
    counts = s.counts(keys, now)
    return sum(counts[: len(weighed)]), sum(counts[len(weighed) :])


def _block(
    s: State, kind: str, key: str, reason: str, now: float, seconds: int, counts: dict[str, int]
) -> Refused:
    s.put_counter(block_key(kind, key), 1, now + seconds)
    _record_block(s, Block(kind, key, reason, now, now + seconds, counts))
    return Refused(kind, seconds)


def _record_block(s: State, block: Block) -> None:
    s.put_block(block)
    emit(s, "block.created", block_data(block), block.started_at)


def _count_range(s: State, scope: str, which: str, sent_at: float, now: float, by: int) -> None:
    """Count a send (``s``) or approval (``a``) in the range's buckets of ``sent_at``."""
    j, h = stat_bucket(sent_at), day_bucket(sent_at)
    keys = (
        (range_key(scope, which, j), (j + STAT_BUCKETS_KEPT) * STAT_BUCKET_SECONDS),
        (range_key(scope, which.upper(), h), (h + DAY_BUCKETS_KEPT) * HOUR),
    )
    for key, until in keys:
        if until <= now:
            continue
        if by > 0:
            s.bump(key, until, now, extend=True)
        else:
            s.decrement(key)


def _charge(s: State, request: ports.SendRequest, now: float) -> Issued:
    if request.cooldown_seconds > 0:
        s.put_counter(cooldown_key(request.phone), 1, now + request.cooldown_seconds)
    now_ms = to_ms(now)
    for q in request.quotas:
        if q.buckets:
            j = bucket_index(now_ms, q.window_ms, q.buckets)
            leaves_ms = bucket_leaves(j, q.window_ms, q.buckets)
            s.bump(bucket_key(q.kind, q.key, j), leaves_ms / 1000, now, extend=True)
        else:
            expires_at = (now_ms + q.window_ms) / 1000
            s.log_add(log_key(q.kind, q.key), request.send_id, now_ms, expires_at)
    for g in request.surges:
        idx = window_index(now, g.window_seconds)
        # Lives through the next window too, where it is the baseline.
        s.bump(surge_key(g.kind, g.key, idx), (idx + 2) * g.window_seconds, now, extend=True)
    added = []
    for d in request.distinct:
        idx = window_index(now, d.window_seconds)
        key = set_key(d.kind, d.key, idx)
        added.append(s.add_member(key, d.member, (idx + 1) * d.window_seconds))
    for scope in request.ranges:
        _count_range(s, scope, "s", now, now, 1)
    expires_at = now + request.ttl_seconds
    resumed = _resumable(s, request, now)  # before the code is replaced
    if resumed is None:
        _supersede(s, request.phone, now)
    vid = resumed.verification.id if resumed is not None else request.verification_id
    if vid and s.events:
        s.await_end(vid, expires_at)
    code = Code(request.code_hash, 0, expires_at, request.send_id, tuple(added), vid, now)
    s.put_code(request.phone, code)
    kept_until = expires_at + request.retention_seconds
    if resumed is not None:
        v = resumed.verification
        send_times = (*v.send_times, now)[-SENDS_KEPT:]
        v = replace(v, updated_at=now, expires_at=expires_at, send_times=send_times)
        s.put_record(Record(v, kept_until))
    elif vid:
        record = Verification(
            id=vid,
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
        s.put_record(Record(record, kept_until))
    return Issued(request, now, verification_id=vid)


def _supersede(s: State, phone: str, now: float) -> None:
    """A newer send replaces the phone's live code: its pending verification is
    canceled from now on (``Verification.seen_at``); with events on, say so."""
    if not s.events:
        return
    code = s.code(phone, now)
    record = _kept(s, code.verification_id, now) if code is not None else None
    if record is not None and record.verification.status == "pending":
        s.drop_awaiting(record.verification.id)
        seen = replace(record.verification, status="canceled")
        emit(s, "verification.canceled", verification_data(seen), now)


def _resumable(s: State, request: ports.SendRequest, now: float) -> Record | None:
    """The pending verification this send continues (``request.resume``), if any."""
    if not (request.resume and request.verification_id):
        return None
    code = s.code(request.phone, now)
    record = _kept(s, code.verification_id, now) if code is not None else None
    if record is None:
        return None
    v = record.verification
    same = (v.purpose, v.channel, v.details) == (request.purpose, request.channel, request.details)
    return record if same and v.status == "pending" and v.expires_at > now else None


def void_issue(s: State, request: ports.SendRequest, now: float) -> None:
    code = s.code(request.phone)
    if code is None or code.send_id != request.send_id:
        # Not issued yet (or consumed, or replaced): make sure it never is.
        s.put_counter(void_key(request.phone, request.send_id), 1, now + request.reach_seconds)
        return
    s.drop_code(request.phone)
    for scope in request.ranges:
        _count_range(s, scope, "s", now, now, -1)
    if code.verification_id:
        _finish(s, code.verification_id, "failed", now)
    s.drop_counter(cooldown_key(request.phone))
    for q in request.quotas:
        if q.buckets:
            s.decrement(bucket_key(q.kind, q.key, bucket_index(to_ms(now), q.window_ms, q.buckets)))
        else:
            s.log_remove(log_key(q.kind, q.key), request.send_id)
    for g in request.surges:
        s.decrement(surge_key(g.kind, g.key, window_index(now, g.window_seconds)))
    for d, new in zip(request.distinct, code.new_members, strict=False):
        if new:
            s.remove_member(set_key(d.kind, d.key, window_index(now, d.window_seconds)), d.member)


# -- verify ------------------------------------------------------------------------------
def begin_verify(
    s: State,
    phone: str,
    ttl_seconds: int,
    now: float,
    lockout: Lockout,
    window: ports.RequestWindow | None = None,
) -> Attempt:
    hit = hit_window(s, window, now) if window is not None else None
    if hit is not None and window is not None and hit.over(window):
        return Attempt(attempts=0, code_hash=None, window_hit=hit)
    failures = s.counter(fails_key(phone), now)
    count, last, remembered_until = (
        (failures.count, failures.updated_at, failures.expires_at) if failures else (0, 0.0, 0.0)
    )
    wait = lockout.wait_seconds(count)
    if wait and last + wait > now:
        locked_for = max(1, math.ceil(last + wait - now))
        return Attempt(attempts=0, code_hash=None, locked_for=locked_for, window_hit=hit)
    # No live code: a guess counts like one at a code, on a record of its own.
    code = s.code(phone, now) or Code(None, 0, now + ttl_seconds)
    code = replace(code, attempts=code.attempts + 1)
    s.put_code(phone, code)
    # Failures against a live code are remembered long; a guess at a phone with no
    # code only as long as a code would live.
    if code.code_hash is not None:
        remembered_until = now + lockout.memory_seconds
    else:
        remembered_until = max(remembered_until, now + ttl_seconds)
    s.put_counter(fails_key(phone), count + 1, remembered_until, now)
    locked = lockout.wait_seconds(count + 1)
    if locked:
        # A failure that locks the phone: operators see it among the blocks.
        counts = {"failures": count + 1}
        _record_block(s, Block(lockout.kind, phone, "failures", now, now + locked, counts))
    return Attempt(
        attempts=code.attempts,
        code_hash=code.code_hash,
        window_hit=hit,
        verification_id=code.verification_id,
    )


def consume(
    s: State,
    phone: str,
    code_hash: bytes,
    now: float,
    verification_id: str = "",
    ranges: Sequence[str] = (),
) -> bool:
    code = s.code(phone, now)
    if code is None or code.code_hash != code_hash:
        return False
    s.drop_code(phone)
    s.drop_counter(fails_key(phone))
    s.drop_blocks(phone)
    if code.sent_at is not None:
        for scope in ranges:
            _count_range(s, scope, "a", code.sent_at, now, 1)
    if verification_id and code.verification_id == verification_id:
        record = s.record(verification_id)
        if record is not None and record.verification.status == "pending":
            _finish(s, verification_id, "approved", now)
    return True


# -- verifications -----------------------------------------------------------------------
def _kept(s: State, verification_id: str, now: float) -> Record | None:
    """The record as stored, while it is kept."""
    record = s.record(verification_id) if verification_id else None
    return record if record is not None and record.expires_at > now else None


def get_verification(s: State, verification_id: str, now: float) -> Verification | None:
    record = _kept(s, verification_id, now)
    if record is None:
        return None
    v = record.verification
    code = s.code(v.phone, now)
    return v.seen_at(now, code is not None and code.verification_id == v.id)


def finish_verification(
    s: State, verification_id: str, status: ports.VerificationStatus, now: float
) -> Verification | None:
    seen = get_verification(s, verification_id, now)
    if seen is None or seen.status != "pending":
        return seen
    if status in ("canceled", "approved"):
        s.drop_code(seen.phone)  # pending: the phone's live code is its own
    _finish(s, verification_id, status, now)
    return replace(seen, status=status, updated_at=now)


def _finish(s: State, verification_id: str, status: ports.VerificationStatus, now: float) -> None:
    """Set a final status, and tell of it (while the record is kept)."""
    record = s.record(verification_id)
    if record is None:
        return
    v = replace(record.verification, status=status, updated_at=now)
    s.put_record(Record(v, record.expires_at))
    if s.events:
        s.drop_awaiting(verification_id)
        if record.expires_at > now:
            emit(s, f"verification.{EVENT_NAMES[status]}", verification_data(v), now)


def set_channel(s: State, verification_id: str, channel: str) -> None:
    record = s.record(verification_id)
    if record is not None:
        v = replace(record.verification, channel=channel)
        s.put_record(Record(v, record.expires_at))


def hit_window(s: State, window: ports.RequestWindow, now: float) -> WindowHit:
    counter = s.bump(window_key(window.key), now + window.window_ms / 1000, now, extend=False)
    # Rounded, not truncated: the float seconds of a whole-ms instant are inexact.
    return WindowHit(counter.count, reset_after_ms=max(0, round((counter.expires_at - now) * 1000)))


# -- what operators see and undo (DefenceStore) ------------------------------------------
def blocks(s: State, now: float) -> list[Block]:
    """Recorded blocks still in force: a range's block mark, or a phone's failures."""
    live = []
    for b in s.block_records(now):
        mark = fails_key(b.scope) if b.reason == "failures" else block_key(b.kind, b.scope)
        counter = s.counter(mark, now)
        if counter is not None and counter.count:  # a lifted block is graced, at 0
            live.append(b)
    return sorted(live, key=lambda b: (b.started_at, b.kind, b.scope))


def lift_block(s: State, kind: str, scope: str, now: float) -> Block | None:
    found = [b for b in blocks(s, now) if (b.kind, b.scope) == (kind, scope)]
    if not found:
        return None
    s.drop_blocks(scope, kind)
    mark = s.counter(block_key(kind, scope), now)
    if mark is not None:
        # Until it would have ended, the range's guards let it be.
        s.put_counter(block_key(kind, scope), 0, mark.expires_at)
    else:  # a lockout
        s.drop_counter(fails_key(scope))
    return found[0]


def phone_state(s: State, phone: str, now: float, sends: Quota) -> PhoneState:
    code = s.code(phone, now)
    pending = code is not None and code.code_hash is not None
    cooldown = s.counter(cooldown_key(phone), now)
    failures = s.counter(fails_key(phone), now)
    logged = s.log_times(log_key(sends.kind, sends.key), to_ms(now) - sends.window_ms)
    record = None
    if code is not None and code.verification_id:
        record = get_verification(s, code.verification_id, now)
    return PhoneState(
        phone=phone,
        code_pending=pending,
        code_expires_at=code.expires_at if pending and code is not None else None,
        attempts=code.attempts if pending and code is not None else 0,
        cooldown_until=cooldown.expires_at if cooldown is not None else None,
        sends_in_window=len(logged),
        failures=failures.count if failures is not None else 0,
        last_failure_at=failures.updated_at if failures is not None else None,
        verification=record,
    )


def set_override(s: State, which: ports.OverrideList, entry: str, present: bool) -> bool:
    return s.set_listed(which, entry, present)


def overrides(s: State) -> dict[ports.OverrideList, list[str]]:
    lists: dict[ports.OverrideList, list[str]] = {"exempt": [], "deny": []}
    for which, entry in sorted(s.list_entries()):
        lists[which].append(entry)
    return lists


def range_stats(s: State, now: float) -> list[RangeStats]:
    """Every range with a send in the last day: its counts of the last hour and day."""
    j, h = stat_bucket(now), day_bucket(now)
    counts: dict[str, dict[str, int]] = {}
    for key, count in s.counters_under(RANGE_PREFIX, now):
        which, rest = key.removeprefix(RANGE_PREFIX).split(":", 1)
        scope, _, bucket = rest.rpartition(":")
        b = int(bucket)
        in_hour = which in "sa" and j - 11 <= b <= j
        in_day = which in "SA" and h - 23 <= b <= h
        if in_hour or in_day:
            scope_counts = counts.setdefault(scope, {})
            scope_counts[which] = scope_counts.get(which, 0) + count
    return [
        RangeStats(scope, c.get("s", 0), c.get("a", 0), c.get("S", 0), c.get("A", 0))
        for scope, c in sorted(counts.items())
        if c.get("S", 0)
    ]


# -- events (EventLog) -------------------------------------------------------------------
def emit(s: State, type: str, data: dict[str, Any], now: float) -> None:
    """Queue an event, when the store queues them."""
    if s.events:
        s.push_event(type, now, data)


def next_events(
    s: State, owner: str, now: float, lease_seconds: float, limit: int
) -> list[ports.Event] | None:
    lease = s.lease()
    delivered = lease[2] if lease is not None else 0
    if lease is not None and lease[0] != owner and lease[1] > now:
        return None
    s.put_lease(owner, now + lease_seconds, delivered)
    return s.events_after(delivered, limit)


def ack_event(s: State, owner: str, event_id: str) -> None:
    lease = s.lease()
    if lease is None or lease[0] != owner:
        return
    s.put_lease(owner, lease[1], max(lease[2], int(event_id)))
    s.drop_events(int(event_id))


def sweep_expired(s: State, now: float, limit: int) -> int:
    due = s.due(now, limit)
    for vid in due:
        s.drop_awaiting(vid)
        record = _kept(s, vid, now)
        if record is not None and record.verification.status == "pending":
            seen = replace(record.verification, status="expired")
            emit(s, "verification.expired", verification_data(seen), now)
    return len(due)
