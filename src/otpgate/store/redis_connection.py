"""One pipelined Redis connection per process, for the store's every call.

Each caller writes its command at once and gets its reply in order, so many
concurrent requests share one socket without waiting for each other
(auto-pipelining, as ioredis does for the Node service). hiredis packs and
parses the protocol and redis-py parses the URL; this module only matches
replies to callers, (re)connects, and fails callers whose reply is late.

Why not redis-py's pool: on this project's hot path a script call cost about
50 µs of CPU through it and about 6 µs here, and the verify route is one call.
It reaches into parts of redis-py and hiredis that are not their documented
API; ``unavailable()`` says when an installed version lacks one, and the store
then uses redis-py's own client (``redis_client``) instead.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from typing import Any

from redis import connection as redispy_connection

from otpgate.store.redis_link import RedisConnectionError, RedisReplyError

try:
    import hiredis
except ImportError:  # a declared dependency; unavailable() reports its absence
    hiredis = None  # type: ignore[assignment]

_WATCHDOG_SECONDS = 0.05


def unavailable() -> str | None:
    """Why this connection cannot run on the installed libraries, or None when it can.

    Only looks the parts up; nothing is called, opened or imported anew.
    """
    if hiredis is None:
        return "hiredis is not installed"
    for name in ("Reader", "pack_command", "ReplyError"):
        if not hasattr(hiredis, name):
            return f"hiredis {getattr(hiredis, '__version__', '?')} has no {name}"
    if not callable(getattr(redispy_connection, "parse_url", None)):
        return "redis-py has no callable redis.connection.parse_url"
    if not isinstance(getattr(redispy_connection, "SSLConnection", None), type):
        return "redis-py has no redis.connection.SSLConnection class"
    return None


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: PipelinedConnection) -> None:
        self._owner = owner
        self._reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._owner._pending
        while (reply := self._reader.gets()) is not False:
            future, _ = pending.popleft()
            if not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(RedisReplyError(str(reply)))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(self, "connection lost")


class PipelinedConnection:
    def __init__(self, url: str, *, timeout: float) -> None:
        params = redispy_connection.parse_url(url)  # type: ignore[no-untyped-call]
        self._host = str(params.get("host", "localhost"))
        self._port = int(params.get("port", 6379))
        self._path = params.get("path")
        self._ssl = (
            ssl.create_default_context()
            if params.get("connection_class") is redispy_connection.SSLConnection
            else None
        )
        if self._ssl is not None and params.get("ssl_cert_reqs") == "none":
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE
        self._hello: list[tuple[Any, ...]] = []
        if params.get("password"):
            user = params.get("username")
            self._hello.append(
                ("AUTH", user, params["password"]) if user else ("AUTH", params["password"])
            )
        if int(params.get("db", 0)):
            self._hello.append(("SELECT", int(params["db"])))
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._outgoing: list[bytes] = []

    async def execute(self, *args: Any) -> Any:
        if self._transport is None or self._transport.is_closing():
            await self._connect()
        return await self._send(args)

    def _send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise RedisConnectionError("not connected")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        # Queue the command and its caller with no await in between: replies come back
        # in this order. Commands queued in one loop turn leave in one write.
        self._pending.append((future, time.monotonic() + self._timeout))
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(hiredis.pack_command(args))
        if self._watchdog is None:
            self._watchdog = loop.call_later(_WATCHDOG_SECONDS, self._check_deadlines)
        return future

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        transport = self._transport
        if outgoing and transport is not None and not transport.is_closing():
            transport.write(b"".join(outgoing))

    async def _connect(self) -> None:
        # Concurrent callers share one connection attempt.
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
        try:
            await asyncio.shield(self._connecting)
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect: {type(exc).__name__}") from exc

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        factory = lambda: _Protocol(self)  # noqa: E731
        if self._path:
            opening = loop.create_unix_connection(factory, str(self._path))
        else:
            opening = loop.create_connection(factory, self._host, self._port, ssl=self._ssl)
        transport, protocol = await asyncio.wait_for(opening, self._timeout)
        self._transport, self._protocol = transport, protocol
        for command in self._hello:
            try:
                await self._send(command)
            except RedisReplyError:
                transport.abort()
                raise

    def _check_deadlines(self) -> None:
        """Fail everything when the oldest reply is late: the server is stuck or gone."""
        self._watchdog = None
        if not self._pending:
            return
        if self._pending[0][1] <= time.monotonic():
            if self._protocol is not None:
                self._lost(self._protocol, "timed out")
            return
        self._watchdog = asyncio.get_running_loop().call_later(
            _WATCHDOG_SECONDS, self._check_deadlines
        )

    def _lost(self, protocol: _Protocol, reason: str) -> None:
        if protocol is not self._protocol:
            return  # an old connection's late news
        if self._transport is not None:
            self._transport.abort()
        self._transport = self._protocol = None
        self._outgoing = []
        pending, self._pending = self._pending, collections.deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(RedisConnectionError(reason))

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._protocol is not None:
            self._lost(self._protocol, "closed")
