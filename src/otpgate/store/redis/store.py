"""Redis store: each operation is one Lua script, so one atomic round trip.

Key layout (``P`` is REDIS_KEY_PREFIX). On Redis Cluster ``P`` itself carries a hash
tag (``otpgate:`` is written ``{otpgate}:``, ``redis_slot``), and Redis hashes a key by
its first ``{...}`` only: every key below is in that one slot, so every script's keys,
those it builds itself too, are on one node. On one server or Sentinel the prefix is
used as given, and the braces below are plain characters:

- ``P{phones}:<slice ms>:<slice>:<shard>`` hashes of phone records (``lua/record.lua``),
  field = the phone: its code (HMAC, attempts, the send's short id, which distinct sets
  the send joined, its time and verification), resend cooldown, the sends its own send
  limit logs and its failed guesses while it had no code, packed in one value, filed
  under the time slice the record's last part ends in (a quarter of the span:
  ``phone_state_seconds``); each slice's hash expires a slice after it. An entry in a
  shared hash, not keys of its own: a pending code costs about as much as the Node
  service's one string key, a guess at a number with no code a few dozen bytes
- ``P{<verification id>}:ver`` a verification: ``ph`` phone, ``st`` stored status, ``ch``
  channel, ``pu`` purpose, ``dt`` details, ``c``/``u`` created/updated, ``e`` the code's
  expiry and ``sa`` its send times (comma-separated; ms epoch); expires ``retention``
  after the code. The code's ``v`` names it. A resuming send reaches the record of the
  code it replaces by a key the script builds, not one it is given: it is in the
  slot of the keys it is given because every key is in one slot.
- ``P{+12125550123}:void:<id>`` the mark of a send voided before its issue ran: its end
  (ms epoch); expires then
- ``P{+12125550123}:fails``    consecutive failed verifies ``n`` and the last one's time
  ``l``, once one was at a live code (remembered for weeks, so not in the record)
- ``P{<scope>}:log:<kind>``    a quota's sliding log (sorted set: score = send time in
  ms epoch, member = send id); expires when its newest send leaves the window. The
  phone's own send limit is logged in its record instead, when its window fits the span
- ``P{<scope>}:s:<kind>:<j>``  a quota's sub-window ``j`` (a send count); expires when
  no send counts it any more (``limits.bucket_leaves``)
- ``P{<scope>}:q:<kind>:<n>``  a surge guard's counter of fixed window ``n``
- ``P{<scope>}:d:<kind>:<n>``  set of distinct members in window ``n``
- ``P{<scope>}:b:<kind>``      surge block: its end (ms epoch)
- ``P{<key>}:w``               fixed-window request counter

A send also touches counters of other scopes (IP, country, global) and the
operators' shared state; on Cluster the prefix's tag keeps them in the send's slot.

The scripts keep the store rules written in Python in ``otpgate.store.rules`` (which
the memory and SQLite stores run): the same checks in the same order, the same
charges and refunds; the equivalence test requires the same answers of all three.

The scripts are the ``lua/*.lua`` files next to this module, read once at import;
each documents its KEYS, ARGV and reply. ``window.lua`` is the head of the three
that count the client's request window; ``limits.lua`` mirrors the window
arithmetic of ``otpgate.domain.limits`` for the issue script. Every time they
compute is on the caller's clock (the ``now`` each operation is given, in whole
ms: ``limits.to_ms``); Redis's own clock only decides when it forgets an expired
key.

Commands travel over a ``RedisLink``: the auto-pipelined ``fast_connection``
(``fast_path=True``, the default) or redis-py's own client (``client``),
used with ``fast_path=False`` or when the fast one cannot run on the installed
libraries (logged once, at construction). Both connect by the parsed REDIS_URL
(``redis_url``: one server, with TLS for ``rediss://``, the master Sentinel names, or
the Cluster node serving the prefix's slot) and fail the same way.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import orjson

from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.events import EVENT_NAMES
from otpgate.domain.limits import (
    DAY_BUCKETS_KEPT,
    HOUR,
    RANGE_DENIED,
    STAT_BUCKET_SECONDS,
    STAT_BUCKETS_KEPT,
    Lockout,
    Quota,
    bucket_index,
    buckets_counted,
    day_bucket,
    retry_seconds,
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
from otpgate.store.redis import fast_connection
from otpgate.store.redis.cluster import SlotOwner
from otpgate.store.redis.link import (
    ClientCertificateRequired,
    RedisConnectionError,
    RedisLink,
    RedisMisconfigured,
    RedisNotSent,
    RedisReplyError,
)
from otpgate.store.redis.sentinel import Sentinels
from otpgate.store.redis.slot import cluster_prefix, key_slot
from otpgate.store.redis.tls import RedisTls, demands_client_certificate
from otpgate.store.redis.url import (
    ClusterUrl,
    RedisUrl,
    SentinelUrl,
    ServerUrl,
    parse_redis_url,
)

# The logger name log lines carry, as before the module moved.
log = logging.getLogger("otpgate.store.redis")


# The tag of a reply cut short by the request window (lua/window.lua). Not 5, as it
# was: begin_verify's third field is the attempt count, and a fifth attempt read as
# "over the window" refused the right code on the last allowed try.
_WINDOW_OVER = -5
# The tag of an issue whose send was voided before the script ran (lua/issue.lua).
_VOIDED = -6
# The tags of a send to a denied range, and of one a conversion guard refused.
_DENIED = 5
_CONVERSION = 7


def _window_hit(reply: list[Any]) -> WindowHit | None:
    count = int(reply[0])
    return None if count < 0 else WindowHit(count=count, reset_after_ms=int(reply[1]))


def _add_verification(spec: dict[str, Any], request: SendRequest) -> None:
    """The record a send opens, for the issue script (nothing without one)."""
    if request.verification_id:
        spec |= {
            "v": request.verification_id,
            "ph": request.phone,
            "ch": request.channel,
            "ret": request.retention_seconds * 1000,
        }
        if request.purpose is not None:
            spec["pu"] = request.purpose
        if request.details is not None:
            spec["dt"] = request.details


def _issue_outcome(request: SendRequest, now: float, reply: list[Any]) -> Issued | Refused:
    """The issue script's reply (lua/issue.lua): the window's count, a tag, details."""
    hit = _window_hit(reply)
    tag, rest = int(reply[2]), reply[3:]
    if tag == 0:
        return Issued(request, now, hit, rest[0].decode() if rest else "")
    if tag == _WINDOW_OVER and hit is not None:
        return Refused("rate_limited", hit.reset_seconds, hit)
    if tag == _VOIDED:
        raise StoreUnavailable()
    if tag == 1:
        return Refused("resend_cooldown", retry_seconds(int(rest[0])), hit)
    if tag == 2:
        return Refused(request.quotas[int(rest[0]) - 1].kind, retry_seconds(int(rest[1])), hit)
    if tag == 3:
        return Refused(request.surges[int(rest[0]) - 1].kind, retry_seconds(int(rest[1])), hit)
    if tag == _DENIED:
        return Refused(RANGE_DENIED, 0, hit)
    if tag == _CONVERSION:
        kind = request.conversions[int(rest[0]) - 1].kind
        return Refused(kind, retry_seconds(int(rest[1])), hit)
    return Refused(request.distinct[int(rest[0]) - 1].kind, retry_seconds(int(rest[1])), hit)


def _pairs(reply: Any) -> list[tuple[Any, Any]]:
    """A field/value or member/score reply as pairs: flat from the pipelined
    connection, a dict or a list of pairs from redis-py's (its response callbacks)."""
    if isinstance(reply, dict):
        return list(reply.items())
    if reply and isinstance(reply[0], list | tuple):
        return [(a, b) for a, b in reply]
    return list(zip(reply[::2], reply[1::2], strict=True))


@dataclass(frozen=True, slots=True)
class _Script:
    source: str
    sha: str

    @classmethod
    def of(cls, *names: str) -> _Script:
        """The script made of these ``lua/<name>.lua`` files, in order."""
        source = "".join(_LUA.joinpath(f"{name}.lua").read_text("utf-8") for name in names)
        return cls(source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324 - Redis's name


_LUA = files("otpgate.store.redis").joinpath("lua")
_ISSUE = _Script.of("window", "limits", "ranges", "events", "record", "issue")
_VOID = _Script.of("ranges", "events", "record", "void")
_FINISH = _Script.of("events", "record", "finish")
_BEGIN_VERIFY = _Script.of("window", "events", "record", "begin_verify")
_CONSUME = _Script.of("ranges", "events", "record", "consume")
_PHONE = _Script.of("record", "phone")
_NEXT_EVENTS = _Script.of("next_events")
_ACK_EVENT = _Script.of("ack_event")
_SWEEP = _Script.of("events", "sweep")
_CHANNEL = _Script.of("channel")

# ranges.lua's bucket layout: stat bucket ms, stat buckets kept, hour ms, hours kept.
_RANGE_BUCKETS = [STAT_BUCKET_SECONDS * 1000, STAT_BUCKETS_KEPT, HOUR * 1000, DAY_BUCKETS_KEPT]
# What every lockout is called among the blocks (``Lockout.kind``).
_PHONE_LOCKED = "phone_locked"
# A phone's record (lua/record.lua) is filed by the time slice its last part ends in:
# the longest-lived part spans at most this many slices, and a read looks in them, in
# the one holding now, and in one more for a writer whose clock runs ahead.
_SLICES = 4
# The hashes of one slice: each holds the records of the phones that hash to it, so a
# flood of 4,000 guesses a second fills each with about 9,000 (freed in ~2 ms), not one
# hash with 600,000.
_SHARDS = 64
# The span of a phone's record is this times a power of two: settings that move the
# longest part a little (a code's lifetime from 5 to 8 minutes) keep the same slices.
_SPAN_STEP = 300


def record_span_seconds(longest: int) -> int:
    """The span of the phone records for parts that live at most ``longest`` seconds:
    5 minutes times the smallest power of two that covers them."""
    span = _SPAN_STEP
    while span < longest:
        span *= 2
    return span


def _short_id(send_id: str) -> int:
    """The send id as a phone's record keeps it: 32 bits, unique among a phone's few
    sends in a window."""
    return int.from_bytes(hashlib.blake2b(send_id.encode(), digest_size=4).digest(), "big")


_HIT_WINDOW = _Script.of("window", "hit_window")


def _link(
    url: RedisUrl, timeout: float, fast_path: bool, tls: RedisTls | None, slot: int
) -> RedisLink:
    """The pipelined connection when asked for and able to run, else redis-py's client;
    ``slot`` is where every key is on Redis Cluster."""
    if fast_path:
        reason = fast_connection.unavailable()
        if reason is None:
            return fast_connection.PipelinedConnection(url, timeout=timeout, tls=tls, slot=slot)
        log.warning("redis fast path unavailable, using redis-py's client: %s", reason)
    from otpgate.store.redis.client import StockClusterConnection, StockConnection

    if isinstance(url, ClusterUrl):
        return StockClusterConnection(url, timeout=timeout, tls=tls, slot=slot)
    return StockConnection(url, timeout=timeout, tls=tls)


class RedisStore:
    def __init__(
        self,
        url: str | RedisUrl,
        *,
        prefix: str = "otpgate:",
        timeout: float = 0.5,
        fast_path: bool = True,
        tls: RedisTls | None = None,
        events: bool = False,
        phone_state_seconds: int = 600,
    ) -> None:
        """``url`` as REDIS_URL writes it, or parsed; ``tls`` is used with ``rediss://``
        and ``rediss+cluster://``; with ``events`` the steps queue events (``EventLog``).
        On Redis Cluster, ``prefix`` is given a hash tag when it has none
        (``redis_slot.cluster_prefix``; PrefixError when it cannot be).

        ``phone_state_seconds`` is the longest a part of a phone's record lives: the
        code's lifetime, the resend cooldown, the phone's send window (wiring passes
        the longest of the settings; the default is the default settings'). It is
        rounded up to 5 minutes times a power of two, the span; records are filed in
        slices of a quarter of the span, which bounds how long one outstays its end.
        Stores share records only with stores of the same span. A code or cooldown
        longer than the span is refused (ValueError), a longer send window is logged
        apart."""
        self._url = parse_redis_url(url) if isinstance(url, str) else url
        slot = 0
        if isinstance(self._url, ClusterUrl):
            prefix = cluster_prefix(prefix)
            slot = key_slot(prefix)
        self._prefix = prefix
        self._slot = slot
        self._state_ms = record_span_seconds(phone_state_seconds) * 1000
        self._slice_ms = self._state_ms // _SLICES
        self._events_on = events
        self._ev = "1" if events else "0"
        self._timeout = timeout
        self._tls = tls
        self._conn = _link(self._url, timeout, fast_path, tls, slot)
        self._outage = OutageLog(log, "redis store")

    # -- keys --------------------------------------------------------------------------
    def _phone_key(self, phone: str, what: str) -> str:
        return f"{self._prefix}{{{phone}}}:{what}"

    def _record_slices(self, phone: str, now_ms: int) -> tuple[list[str], list[int]]:
        """The hashes a phone's record can be in at ``now_ms`` (lua/record.lua), and the
        script's "ps": the first slice, the width, how many."""
        width = self._slice_ms
        first = now_ms // width
        shard = zlib.crc32(phone.encode()) % _SHARDS
        keys = [f"{self._prefix}{{phones}}:{width}:{first + j}:{shard}" for j in range(_SLICES + 2)]
        return keys, [first, width, len(keys)]

    def _record_log(self, request: SendRequest) -> int | None:
        """Which quota's sends the phone's record logs (1-based, for the scripts): the
        first that may be; None for none."""
        for index, q in enumerate(request.quotas, 1):
            if self._logged_in_record(q, request.phone):
                return index
        return None

    def _logged_in_record(self, quota: Quota, phone: str) -> bool:
        """A sliding log of the phone's own, whose window fits the record's span."""
        return not quota.buckets and quota.key == phone and quota.window_ms <= self._state_ms

    def _check_lives(self, *seconds: int) -> None:
        if max(seconds) * 1000 > self._state_ms:
            raise ValueError(
                f"a code or cooldown of {max(seconds)} s outlives the store's phone state"
                f" ({self._state_ms // 1000} s)"
            )

    def _scoped(self, scope: str, what: str) -> str:
        return f"{self._prefix}{{{scope}}}:{what}"

    def _events_key(self, what: str) -> str:
        """``log`` (the events stream), ``lease`` (its deliverer and how far it got),
        ``awaiting`` (pending verifications by their code's end)."""
        return f"{self._prefix}{{events}}:{what}"

    def _defence_key(self, what: str) -> str:
        """Operators' shared state: ``exempt``/``deny`` (sets of range entries),
        ``blocks`` (hash of "<kind> <scope>": what set it), ``locks`` (locked phones by
        lockout end), ``ranges`` (ranges by last send)."""
        return f"{self._prefix}{{defence}}:{what}"

    # -- operations --------------------------------------------------------------------
    async def issue(
        self, request: SendRequest, now: float, window: RequestWindow | None = None
    ) -> Issued | Refused:
        now_ms = to_ms(now)
        self._check_lives(request.ttl_seconds, request.cooldown_seconds)
        keys, slices = self._send_keys(request, now_ms)
        record_log = self._record_log(request)
        for index, q in enumerate(request.quotas, 1):
            if index == record_log:
                continue
            if q.buckets:
                counted = buckets_counted(now_ms, q.window_ms, q.buckets)
                keys += [self._scoped(q.key, f"s:{q.kind}:{j}") for j in counted]
            else:
                keys.append(self._scoped(q.key, f"log:{q.kind}"))
        for d in request.distinct:
            keys.append(self._scoped(d.key, f"d:{d.kind}:{window_index(now, d.window_seconds)}"))
        for g in request.surges:
            idx = window_index(now, g.window_seconds)
            keys += [
                self._scoped(g.key, f"q:{g.kind}:{idx - 1}"),
                self._scoped(g.key, f"q:{g.kind}:{idx}"),
                self._scoped(g.key, f"b:{g.kind}"),
            ]
        keys += [self._defence_key(k) for k in ("exempt", "deny", "blocks", "ranges")]
        keys += [self._events_key("log"), self._events_key("awaiting")]
        keys += [self._scoped(r, "cv") for r in request.ranges]
        conversions = []
        for c in request.conversions:
            keys += [self._scoped(c.key, "cv"), self._scoped(c.key, f"b:{c.kind}")]
            weighed = settled_buckets(now_ms, c.settle_seconds * 1000)
            conversions.append(
                [
                    c.min_sends,
                    c.min_rate,
                    weighed.start,
                    weighed.stop - 1,
                    c.block_seconds * 1000,
                    f"{c.kind} {c.key}",
                ]
            )
        spec: dict[str, Any] = {
            "now": now_ms,
            "id": request.send_id,
            "sid": _short_id(request.send_id),
            "ph": request.phone,
            "ps": slices,
            "ttl": request.ttl_seconds * 1000,
            "cd": request.cooldown_seconds * 1000,
            "q": [[q.limit, q.window_ms, q.buckets] for q in request.quotas],
            "d": [[d.member, d.limit, d.window_seconds * 1000] for d in request.distinct],
            "s": [
                [g.min_sends, g.factor, g.window_seconds * 1000, g.block_seconds * 1000]
                for g in request.surges
            ],
            "sk": [f"{g.kind} {g.key}" for g in request.surges],
            "ov": list(request.overrides),
            "r": list(request.ranges),
            "cv": conversions,
            "rb": _RANGE_BUCKETS,
        }
        if record_log is not None:
            spec["gq"] = record_log
        if self._events_on:
            spec |= {"ev": True, "kp": self._prefix}
        _add_verification(spec, request)
        if request.resume and request.verification_id:
            # The record to continue is named by the code being replaced; the script
            # builds its key (``_record_key``) from this prefix.
            spec |= {"rs": self._prefix, "keep": SENDS_KEPT}
        self._add_window(keys, spec, window)
        reply = await self._run(_ISSUE, keys, [orjson.dumps(spec), request.code_hash])
        return _issue_outcome(request, now, reply)

    def _send_keys(self, request: SendRequest, now_ms: int) -> tuple[list[str], list[int]]:
        """The keys every send step starts with: the phone's record slices, the send's
        void mark, its verification record; and the slices' "ps"."""
        keys, slices = self._record_slices(request.phone, now_ms)
        keys += [
            self._phone_key(request.phone, f"void:{request.send_id}"),
            self._record_key(request.verification_id),
        ]
        return keys, slices

    def _record_key(self, verification_id: str) -> str:
        return f"{self._prefix}{{{verification_id}}}:ver"

    async def void_issue(self, request: SendRequest, now: float) -> None:
        now_ms = to_ms(now)
        counters = [
            self._scoped(q.key, f"s:{q.kind}:{bucket_index(now_ms, q.window_ms, q.buckets)}")
            for q in request.quotas
            if q.buckets
        ]
        counters += [
            self._scoped(g.key, f"q:{g.kind}:{window_index(now, g.window_seconds)}")
            for g in request.surges
        ]
        record_log = self._record_log(request)
        logs = [
            self._scoped(q.key, f"log:{q.kind}")
            for index, q in enumerate(request.quotas, 1)
            if not q.buckets and index != record_log
        ]
        sets = [
            self._scoped(d.key, f"d:{d.kind}:{window_index(now, d.window_seconds)}")
            for d in request.distinct
        ]
        args: list[Any] = [
            request.send_id,
            now_ms + request.reach_seconds * 1000,
            len(counters),
            len(logs),
            now_ms,
            self._prefix,
            *_RANGE_BUCKETS,
            self._ev,
            request.phone,
            _short_id(request.send_id),
        ]
        keys, slices = self._send_keys(request, now_ms)
        args += [*slices, "1" if record_log is not None else "0"]
        args += [d.member for d in request.distinct]
        ranges = [self._scoped(r, "cv") for r in request.ranges]
        ranges += [
            self._defence_key("ranges"),
            self._events_key("log"),
            self._events_key("awaiting"),
        ]
        await self._run(_VOID, keys + counters + logs + sets + ranges, args)

    async def begin_verify(
        self,
        phone: str,
        ttl_seconds: int,
        now: float,
        lockout: Lockout,
        window: RequestWindow | None = None,
    ) -> Attempt:
        now_ms = to_ms(now)
        self._check_lives(ttl_seconds)
        keys, slices = self._record_slices(phone, now_ms)
        spec: dict[str, Any] = {
            "now": now_ms,
            "ps": slices,
            "exp": now_ms + ttl_seconds * 1000,
            "t": lockout.threshold,
            "b": lockout.base_seconds * 1000,
            "m": lockout.max_seconds * 1000,
            "c": lockout.hard_cap,
            "mem": lockout.memory_seconds * 1000,
            "ph": phone,
            "k": lockout.kind,
        }
        if self._events_on:
            spec["ev"] = True
        keys += [
            self._phone_key(phone, "fails"),
            self._defence_key("locks"),
            self._events_key("log"),
        ]
        self._add_window(keys, spec, window)
        reply = await self._run(_BEGIN_VERIFY, keys, [orjson.dumps(spec)])
        hit = _window_hit(reply)
        tag = int(reply[2])
        if tag == _WINDOW_OVER:
            return Attempt(attempts=0, code_hash=None, window_hit=hit)
        if tag < 0:
            return Attempt(0, None, locked_for=retry_seconds(int(reply[3])), window_hit=hit)
        return Attempt(
            attempts=tag,
            code_hash=reply[3] or None,
            window_hit=hit,
            verification_id=reply[4].decode() if reply[4] else "",
        )

    async def consume(
        self,
        phone: str,
        code_hash: bytes,
        now: float,
        verification_id: str = "",
        ranges: Sequence[str] = (),
    ) -> bool:
        now_ms = to_ms(now)
        keys, slices = self._record_slices(phone, now_ms)
        keys += [
            self._phone_key(phone, "fails"),
            self._record_key(verification_id),
            self._defence_key("locks"),
            self._events_key("log"),
            self._events_key("awaiting"),
            *(self._scoped(r, "cv") for r in ranges),
        ]
        args = [code_hash, verification_id, now_ms, phone, *_RANGE_BUCKETS, self._ev, *slices]
        return bool(await self._run(_CONSUME, keys, args))

    async def get_verification(self, verification_id: str, now: float) -> Verification | None:
        return await self._finish(verification_id, "", now)

    async def finish_verification(
        self, verification_id: str, status: VerificationStatus, now: float
    ) -> Verification | None:
        return await self._finish(verification_id, status, now)

    async def set_channel(self, verification_id: str, channel: str) -> None:
        await self._run(_CHANNEL, [self._record_key(verification_id)], [channel])

    async def _finish(self, verification_id: str, status: str, now: float) -> Verification | None:
        record = self._record_key(verification_id)
        try:
            phone = await self._conn.execute("HGET", record, "ph")
        except (RedisConnectionError, RedisReplyError) as exc:
            self._failed(exc)
            raise StoreUnavailable() from exc
        if phone is None:
            return None
        now_ms = to_ms(now)
        slice_keys, slices = self._record_slices(phone.decode(), now_ms)
        keys = [record, self._events_key("log"), self._events_key("awaiting"), *slice_keys]
        name = EVENT_NAMES[status] if status else ""  # type: ignore[index]
        args = [verification_id, status, now_ms, self._ev, name, phone, *slices]
        reply = await self._run(_FINISH, keys, args)
        if not reply:
            return None  # lapsed between the two steps
        fields = {reply[i].decode(): reply[i + 1].decode() for i in range(1, len(reply), 2)}
        stored = Verification(
            id=verification_id,
            phone=fields["ph"],
            status=fields["st"],
            channel=fields["ch"],
            purpose=fields.get("pu"),
            created_at=int(fields["c"]) / 1000,
            updated_at=int(fields["u"]) / 1000,
            expires_at=int(fields["e"]) / 1000,
            details=fields.get("dt"),
            send_times=tuple(int(t) / 1000 for t in fields["sa"].split(",") if t)
            if "sa" in fields
            else (),
        )
        return stored.seen_at(now, bool(reply[0]))

    # -- events (EventLog) ---------------------------------------------------------------
    async def append_event(self, type: str, data: dict[str, Any], now: float) -> None:
        if self._events_on:
            log_key, at = self._events_key("log"), to_ms(now)
            await self._cmd("XADD", log_key, "*", "t", type, "at", at, "d", orjson.dumps(data))

    async def next_events(
        self, owner: str, now: float, lease_seconds: float, limit: int
    ) -> list[Event] | None:
        keys = [self._events_key("lease"), self._events_key("log")]
        until = to_ms(now + lease_seconds)
        reply = await self._run(_NEXT_EVENTS, keys, [owner, to_ms(now), until, limit])
        if not reply and reply != []:
            return None
        found = []
        for entry_id, flat in reply:
            fields = dict(_pairs(flat))
            found.append(
                Event(
                    entry_id.decode(),
                    fields[b"t"].decode(),
                    int(fields[b"at"]) / 1000,
                    orjson.loads(fields[b"d"]),
                )
            )
        return found

    async def ack_event(self, owner: str, event_id: str) -> None:
        keys = [self._events_key("lease"), self._events_key("log")]
        await self._run(_ACK_EVENT, keys, [owner, event_id])

    async def sweep_expired(self, now: float, limit: int) -> int:
        keys = [self._events_key("awaiting"), self._events_key("log")]
        return int(await self._run(_SWEEP, keys, [to_ms(now), limit, self._prefix]))

    # -- what operators see and undo (DefenceStore) ------------------------------------
    async def _cmd(self, *args: Any) -> Any:
        try:
            reply = await self._conn.execute(*args)
        except (RedisConnectionError, RedisReplyError) as exc:
            self._failed(exc)
            raise StoreUnavailable() from exc
        self._outage.ok()
        return reply

    async def blocks(self, now: float) -> list[Block]:
        now_ms = to_ms(now)
        registry = self._defence_key("blocks")
        found: list[Block] = []
        for name, value in _pairs(await self._cmd("HGETALL", registry)):
            kind, _, scope = name.decode().partition(" ")
            entry = orjson.loads(value)
            marker = await self._cmd("GET", self._scoped(scope, f"b:{kind}"))
            if entry["e"] <= now_ms or marker is None or int(marker) <= now_ms:
                await self._cmd("HDEL", registry, name)  # over, or lifted
                continue
            counts = {k: int(v) for k, v in entry["c"].items()}
            found.append(
                Block(kind, scope, entry["r"], entry["s"] / 1000, entry["e"] / 1000, counts)
            )
        locks = self._defence_key("locks")
        await self._cmd("ZREMRANGEBYSCORE", locks, "-inf", now_ms)
        locked = await self._cmd("ZRANGE", locks, f"({now_ms}", "+inf", "BYSCORE", "WITHSCORES")
        for member, ends in _pairs(locked):
            phone = member.decode()
            state = await self._phone(phone, now_ms)
            n, last = int(state[6]), int(state[7])
            if not n:
                await self._cmd("ZREM", locks, member)  # lifted, or cleared by a success
                continue
            counts = {"failures": n}
            block = Block(_PHONE_LOCKED, phone, "failures", last / 1000, float(ends) / 1000, counts)
            found.append(block)
        return sorted(found, key=lambda b: (b.started_at, b.kind, b.scope))

    async def lift_block(self, kind: str, scope: str, now: float) -> Block | None:
        live = {(b.kind, b.scope): b for b in await self.blocks(now)}
        block = live.get((kind, scope))
        if block is None:
            return None
        if kind == _PHONE_LOCKED and block.reason == "failures":
            await self._phone(scope, to_ms(now), forget=True)
            await self._cmd("ZREM", self._defence_key("locks"), scope)
        else:
            # Until it would have ended, the range's guards let it be (a negative end).
            ends_ms = to_ms(block.ends_at)
            marker = self._scoped(scope, f"b:{kind}")
            await self._cmd("SET", marker, -ends_ms, "PXAT", ends_ms)
            await self._cmd("HDEL", self._defence_key("blocks"), f"{kind} {scope}")
        return block

    async def phone_state(self, phone: str, now: float, sends: Quota) -> PhoneState:
        now_ms = to_ms(now)
        in_record = self._logged_in_record(sends, phone)
        state = await self._phone(phone, now_ms, log_ms=sends.window_ms if in_record else 0)
        pending, expires, attempts, vid, cooldown, logged, n, last = state
        if not in_record:
            log_key = self._scoped(sends.key, f"log:{sends.kind}")
            logged = await self._cmd("ZCOUNT", log_key, f"({now_ms - sends.window_ms}", "+inf")
        record = await self.get_verification(vid.decode(), now) if vid else None
        return PhoneState(
            phone=phone,
            code_pending=bool(pending),
            code_expires_at=int(expires) / 1000 if pending else None,
            attempts=int(attempts),
            cooldown_until=int(cooldown) / 1000 if int(cooldown) > now_ms else None,
            sends_in_window=int(logged),
            failures=int(n),
            last_failure_at=int(last) / 1000 if int(n) else None,
            verification=record,
        )

    async def _phone(
        self, phone: str, now_ms: int, *, forget: bool = False, log_ms: int = 0
    ) -> list[Any]:
        """lua/phone.lua's reply for ``phone``; ``forget`` drops its failures first."""
        keys, slices = self._record_slices(phone, now_ms)
        keys.append(self._phone_key(phone, "fails"))
        args = [phone, now_ms, *slices, "1" if forget else "0", log_ms]
        return list(await self._run(_PHONE, keys, args))

    async def set_override(self, which: OverrideList, entry: str, present: bool) -> bool:
        command = "SADD" if present else "SREM"
        return bool(await self._cmd(command, self._defence_key(which), entry))

    async def overrides(self) -> dict[OverrideList, list[str]]:
        lists: dict[OverrideList, list[str]] = {"exempt": [], "deny": []}
        for which in ("exempt", "deny"):
            members = await self._cmd("SMEMBERS", self._defence_key(which))
            lists[which] = sorted(m.decode() for m in members)
        return lists

    async def range_stats(self, now: float) -> list[RangeStats]:
        now_ms = to_ms(now)
        index = self._defence_key("ranges")
        await self._cmd("ZREMRANGEBYSCORE", index, "-inf", now_ms - DAY_BUCKETS_KEPT * HOUR * 1000)
        j, h = stat_bucket(now), day_bucket(now)
        stats = []
        for member in await self._cmd("ZRANGE", index, 0, -1):
            scope = member.decode()
            counts = await self._cmd("HGETALL", self._scoped(scope, "cv"))
            sums = {"s": 0, "a": 0, "S": 0, "A": 0}
            for name, value in _pairs(counts):
                field_name = name.decode()
                if field_name[0] not in "saSA":
                    continue  # the issue step's remembered verdict ("vc")
                which, bucket = field_name[0], int(field_name[1:])
                in_hour = which in "sa" and j - 11 <= bucket <= j
                in_day = which in "SA" and h - 23 <= bucket <= h
                if in_hour or in_day:
                    sums[which] += int(value)
            if sums["S"]:
                stats.append(RangeStats(scope, sums["s"], sums["a"], sums["S"], sums["A"]))
        return sorted(stats, key=lambda r: r.scope)

    async def hit_window(self, window: RequestWindow, now: float) -> WindowHit:
        keys: list[str] = []
        spec: dict[str, Any] = {"now": to_ms(now)}
        self._add_window(keys, spec, window)
        reply = await self._run(_HIT_WINDOW, keys, [orjson.dumps(spec)])
        return WindowHit(count=int(reply[0]), reset_after_ms=int(reply[1]))

    def _add_window(
        self, keys: list[str], spec: dict[str, Any], window: RequestWindow | None
    ) -> None:
        if window is not None:
            keys.append(self._scoped(window.key, "w"))
            spec["w"] = [window.limit, window.window_ms]

    async def ping(self) -> None:
        try:
            await self._conn.execute("PING")
        except (RedisConnectionError, RedisReplyError) as exc:
            raise StoreUnavailable() from exc

    @property
    def prefix(self) -> str:
        """The prefix of every key: REDIS_KEY_PREFIX, with a hash tag on Redis Cluster."""
        return self._prefix

    async def configuration_problem(self) -> str | None:
        """Why this store cannot work as configured (a server certificate refused, a master
        name no sentinel knows, cluster nodes that are no cluster or refuse to say where
        otpgate's slot is), or None; for start-up, which stops on one.

        StoreUnavailable when Redis cannot be reached now: an outage may pass, and the
        service answers 503 meanwhile.
        """
        try:
            if isinstance(self._url, SentinelUrl):
                # Either link would only say "no master": ask in a way that tells why.
                url = self._url
                sentinels = Sentinels(url.sentinels, url.master_name, self._timeout)
                try:
                    await sentinels.master()
                finally:
                    await sentinels.close()
            elif isinstance(self._url, ClusterUrl):
                owner = SlotOwner(self._url, self._slot, self._timeout, self._tls)
                try:
                    await owner.owner()
                finally:
                    await owner.close()
            await self._conn.execute("PING")
        except RedisMisconfigured as exc:
            return str(exc)
        except RedisConnectionError as exc:
            if await self._wants_certificate():
                return str(ClientCertificateRequired())
            raise StoreUnavailable() from exc
        except RedisReplyError as exc:
            raise StoreUnavailable() from exc
        return None

    async def _wants_certificate(self) -> bool:
        """Whether a TLS server that dropped the connection did so for want of a client
        certificate, its alert lost to a reset (redis-py's link only sees the alert when
        it arrives first; the pipelined link asks this itself)."""
        url = self._url
        if not (isinstance(url, ServerUrl) and url.tls and url.address is not None):
            return False
        address = url.address
        return await demands_client_certificate(
            address.host, address.port, self._tls, self._timeout
        )

    async def close(self) -> None:
        await self._conn.close()

    def _failed(self, exc: RedisConnectionError | RedisReplyError) -> None:
        """One error per outage; one more, naming what to change, when the server cannot
        be used as configured (a client certificate it wants and was not given, say)."""
        if isinstance(exc, RedisMisconfigured):
            self._outage.refused(str(exc))
        else:
            self._outage.failed(str(exc))

    async def _run(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        try:
            try:
                reply = await self._conn.execute("EVALSHA", script.sha, len(keys), *keys, *args)
            except RedisReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                # First call since the server started: EVAL also caches the script.
                reply = await self._conn.execute("EVAL", script.source, len(keys), *keys, *args)
        except RedisConnectionError as exc:
            self._failed(exc)
            raise StoreUnavailable(may_have_run=not isinstance(exc, RedisNotSent)) from exc
        except RedisReplyError as exc:
            self._outage.failed(f"a store script was refused: {exc}")
            raise StoreUnavailable() from exc
        self._outage.ok()
        return reply
