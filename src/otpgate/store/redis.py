"""Redis store: each operation is one Lua script, so one atomic round trip.

Key layout (``P`` is REDIS_KEY_PREFIX). Every key of one phone carries the
phone in a ``{hash tag}``, so they share one Redis Cluster slot:

- ``P{+12125550123}:code``     hash ``h`` (code HMAC), ``a`` (attempts), ``i`` (the send's
  id), ``n`` (which distinct sets the send joined); expires with the code
- ``P{+12125550123}:cd``       resend cooldown: its end (ms epoch); expires then
- ``P{<verification id>}:ver`` a verification: ``ph`` phone, ``st`` stored status, ``ch``
  channel, ``pu`` purpose, ``c``/``u`` created/updated and ``e`` the code's expiry (ms
  epoch); expires ``retention`` after the code. The code's ``v`` names it.
- ``P{+12125550123}:void:<id>`` the mark of a send voided before its issue ran: its end
  (ms epoch); expires then
- ``P{+12125550123}:fails``    consecutive failed verifies ``n`` and the last one's time ``l``
- ``P{<scope>}:log:<kind>``    a quota's sliding log (sorted set: score = send time in
  ms epoch, member = send id); expires when its newest send leaves the window. The
  per-phone limit's scope is the phone, so its log shares the phone's slot
- ``P{<scope>}:s:<kind>:<j>``  a quota's sub-window ``j`` (a send count); expires when
  no send counts it any more (``limits.bucket_leaves``)
- ``P{<scope>}:q:<kind>:<n>``  a surge guard's counter of fixed window ``n``
- ``P{<scope>}:d:<kind>:<n>``  set of distinct members in window ``n``
- ``P{<scope>}:b:<kind>``      surge block: its end (ms epoch)
- ``P{<key>}:w``               fixed-window request counter

A send also touches counters of other scopes (IP, country, global), which live
in other slots; on Redis Cluster those limits need a single-shard deployment
or a hash tag shared by all scopes (set REDIS_KEY_PREFIX accordingly).

The scripts are the ``lua/*.lua`` files next to this module, read once at import;
each documents its KEYS, ARGV and reply. ``window.lua`` is the head of the three
that count the client's request window; ``limits.lua`` mirrors the window
arithmetic of ``otpgate.domain.limits`` for the issue script. Every time they
compute is on the caller's clock (the ``now`` each operation is given, in whole
ms: ``limits.to_ms``); Redis's own clock only decides when it forgets an expired
key.

Commands travel over a ``RedisLink``: the auto-pipelined ``redis_connection``
(``fast_path=True``, the default) or redis-py's own client (``redis_client``),
used with ``fast_path=False`` or when the fast one cannot run on the installed
libraries (logged once, at construction). Both connect by the parsed REDIS_URL
(``redis_url``: one server, with TLS for ``rediss://``, or the master Sentinel
names) and fail the same way.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import orjson

from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.limits import (
    Lockout,
    bucket_index,
    buckets_counted,
    retry_seconds,
    to_ms,
    window_index,
)
from otpgate.domain.ports import (
    Attempt,
    Issued,
    Refused,
    RequestWindow,
    SendRequest,
    Verification,
    VerificationStatus,
    WindowHit,
)
from otpgate.outage import OutageLog
from otpgate.store import redis_connection
from otpgate.store.redis_link import (
    RedisConnectionError,
    RedisLink,
    RedisMisconfigured,
    RedisReplyError,
)
from otpgate.store.redis_sentinel import Sentinels
from otpgate.store.redis_tls import RedisTls
from otpgate.store.redis_url import RedisUrl, SentinelUrl, parse_redis_url

log = logging.getLogger(__name__)


# The tag of a reply cut short by the request window (lua/window.lua). Not 5, as it
# was: begin_verify's third field is the attempt count, and a fifth attempt read as
# "over the window" refused the right code on the last allowed try.
_WINDOW_OVER = -5
# The tag of an issue whose send was voided before the script ran (lua/issue.lua).
_VOIDED = -6


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


@dataclass(frozen=True, slots=True)
class _Script:
    source: str
    sha: str

    @classmethod
    def of(cls, *names: str) -> _Script:
        """The script made of these ``lua/<name>.lua`` files, in order."""
        source = "".join(_LUA.joinpath(f"{name}.lua").read_text("utf-8") for name in names)
        return cls(source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324 - Redis's name


_LUA = files("otpgate.store").joinpath("lua")
_ISSUE = _Script.of("window", "limits", "issue")
_VOID = _Script.of("void")
_FINISH = _Script.of("finish")
_BEGIN_VERIFY = _Script.of("window", "begin_verify")
_CONSUME = _Script.of("consume")
_HIT_WINDOW = _Script.of("window", "hit_window")


def _link(url: RedisUrl, timeout: float, fast_path: bool, tls: RedisTls | None) -> RedisLink:
    """The pipelined connection when asked for and able to run, else redis-py's client."""
    if fast_path:
        reason = redis_connection.unavailable()
        if reason is None:
            return redis_connection.PipelinedConnection(url, timeout=timeout, tls=tls)
        log.warning("redis fast path unavailable, using redis-py's client: %s", reason)
    from otpgate.store.redis_client import StockConnection

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
    ) -> None:
        """``url`` as REDIS_URL writes it, or parsed; ``tls`` is used with ``rediss://``."""
        self._url = parse_redis_url(url) if isinstance(url, str) else url
        self._prefix = prefix
        self._timeout = timeout
        self._conn = _link(self._url, timeout, fast_path, tls)
        self._outage = OutageLog(log, "redis store")

    # -- keys --------------------------------------------------------------------------
    def _phone_key(self, phone: str, what: str) -> str:
        return f"{self._prefix}{{{phone}}}:{what}"

    def _scoped(self, scope: str, what: str) -> str:
        return f"{self._prefix}{{{scope}}}:{what}"

    # -- operations --------------------------------------------------------------------
    async def issue(
        self, request: SendRequest, now: float, window: RequestWindow | None = None
    ) -> Issued | Refused:
        now_ms = to_ms(now)
        keys = self._send_keys(request)
        for q in request.quotas:
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
        spec: dict[str, Any] = {
            "now": now_ms,
            "id": request.send_id,
            "ttl": request.ttl_seconds * 1000,
            "cd": request.cooldown_seconds * 1000,
            "q": [[q.limit, q.window_ms, q.buckets] for q in request.quotas],
            "d": [[d.member, d.limit, d.window_seconds * 1000] for d in request.distinct],
            "s": [
                [g.min_sends, g.factor, g.window_seconds * 1000, g.block_seconds * 1000]
                for g in request.surges
            ],
        }
        _add_verification(spec, request)
        self._add_window(keys, spec, window)
        reply = await self._run(_ISSUE, keys, [orjson.dumps(spec), request.code_hash])
        hit = _window_hit(reply)
        tag, rest = int(reply[2]), reply[3:]
        if tag == 0:
            return Issued(request, now, hit)
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
        return Refused(request.distinct[int(rest[0]) - 1].kind, retry_seconds(int(rest[1])), hit)

    def _send_keys(self, request: SendRequest) -> list[str]:
        """The keys every send step starts with: code, cooldown, the send's void mark,
        its verification record."""
        phone = request.phone
        return [
            self._phone_key(phone, "code"),
            self._phone_key(phone, "cd"),
            self._phone_key(phone, f"void:{request.send_id}"),
            self._record_key(request.verification_id),
        ]

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
        logs = [self._scoped(q.key, f"log:{q.kind}") for q in request.quotas if not q.buckets]
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
            *(d.member for d in request.distinct),
        ]
        await self._run(_VOID, self._send_keys(request) + counters + logs + sets, args)

    async def begin_verify(
        self,
        phone: str,
        ttl_seconds: int,
        now: float,
        lockout: Lockout,
        window: RequestWindow | None = None,
    ) -> Attempt:
        now_ms = to_ms(now)
        spec: dict[str, Any] = {
            "now": now_ms,
            "exp": now_ms + ttl_seconds * 1000,
            "t": lockout.threshold,
            "b": lockout.base_seconds * 1000,
            "m": lockout.max_seconds * 1000,
            "c": lockout.hard_cap,
            "mem": lockout.memory_seconds * 1000,
        }
        keys = [self._phone_key(phone, "code"), self._phone_key(phone, "fails")]
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
        self, phone: str, code_hash: bytes, now: float, verification_id: str = ""
    ) -> bool:
        keys = [
            self._phone_key(phone, "code"),
            self._phone_key(phone, "fails"),
            self._record_key(verification_id),
        ]
        return bool(await self._run(_CONSUME, keys, [code_hash, verification_id, to_ms(now)]))

    async def get_verification(self, verification_id: str, now: float) -> Verification | None:
        return await self._finish(verification_id, "", now)

    async def finish_verification(
        self, verification_id: str, status: VerificationStatus, now: float
    ) -> Verification | None:
        return await self._finish(verification_id, status, now)

    async def _finish(self, verification_id: str, status: str, now: float) -> Verification | None:
        record = self._record_key(verification_id)
        try:
            phone = await self._conn.execute("HGET", record, "ph")
        except (RedisConnectionError, RedisReplyError) as exc:
            self._outage.failed(str(exc))
            raise StoreUnavailable() from exc
        if phone is None:
            return None
        keys = [record, self._phone_key(phone.decode(), "code")]
        reply = await self._run(_FINISH, keys, [verification_id, status, to_ms(now)])
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
        )
        return stored.seen_at(now, bool(reply[0]))

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

    async def configuration_problem(self) -> str | None:
        """Why this store cannot work as configured (a server certificate refused, a master
        name no sentinel knows), or None; for start-up, which stops on one.

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
            await self._conn.execute("PING")
        except RedisMisconfigured as exc:
            return str(exc)
        except (RedisConnectionError, RedisReplyError) as exc:
            raise StoreUnavailable() from exc
        return None

    async def close(self) -> None:
        await self._conn.close()

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
            self._outage.failed(str(exc))
            raise StoreUnavailable() from exc
        except RedisReplyError as exc:
            self._outage.failed(f"a store script was refused: {exc}")
            raise StoreUnavailable() from exc
        self._outage.ok()
        return reply
