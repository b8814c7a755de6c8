"""One pipelined Redis connection per process, for the store's every call.

Each caller writes its command at once and gets its reply in order, so many
concurrent requests share one socket without waiting for each other
(auto-pipelining, as ioredis does for the Node service). hiredis packs and
parses the protocol; this module only matches replies to callers, (re)connects,
and fails callers whose reply is late.

Where it connects comes from the parsed REDIS_URL: one server (over TLS for
``rediss://``), the master Sentinel names (``redis_sentinel``), or on Redis Cluster
the master serving otpgate's one hash slot (``redis_cluster``), asked again at every
reconnection. A ``-READONLY`` reply means the server was demoted to a replica: the
connection is dropped, so the next call finds the master anew. A call that has to
reconnect still ends within the timeout of its start.

On Cluster, a ``-MOVED`` for otpgate's slot means that node no longer serves it (a
failover, or the slot's migration ended) and ran nothing: the link stops sending
there, lets the replies already on their way arrive, connects to the node named and
sends each moved command again, all within its call's timeout. ``-CLUSTERDOWN`` and
``-TRYAGAIN`` fail their call (a 503; the command did not run, but trying again at
once would only spin until the cluster heals) and make the link leave the node the
same way, for the one ``CLUSTER SLOTS`` names then. ``-ASK`` (the slot half-way
through a migration) is not followed: its call fails as a reply error (a 503 too).

Why not redis-py's pool: on this project's hot path a script call cost about
50 µs of CPU through it and about 6 µs here, and the verify route is one call.
It reaches into parts of hiredis that are not its documented API;
``unavailable()`` says when an installed version lacks one, and the store then
uses redis-py's own client (``client``) instead.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from typing import Any, cast

from otpgate.store.redis.cluster import SlotOwner
from otpgate.store.redis.link import (
    ClientCertificateRequired,
    RedisConnectionError,
    RedisMisconfigured,
    RedisNotSent,
    RedisReplyError,
)
from otpgate.store.redis.sentinel import Sentinels, SentinelWatch
from otpgate.store.redis.tls import (
    RedisTls,
    demands_client_certificate,
    refusal_text,
    wants_client_certificate,
)
from otpgate.store.redis.url import ClusterUrl, HostPort, RedisUrl, SentinelUrl, ServerUrl

try:
    import hiredis
except ImportError:  # a declared dependency; unavailable() reports its absence
    hiredis = None  # type: ignore[assignment]

_WATCHDOG_SECONDS = 0.05
# How many -MOVED one call follows (within its timeout): one per failover or migration.
_MAX_MOVES = 3
# Cluster replies that mean "not here, not now": the node runs nothing of the command.
_CLUSTER_DOWN = ("CLUSTERDOWN", "TRYAGAIN")


def unavailable() -> str | None:
    """Why this connection cannot run on the installed libraries, or None when it can.

    Only looks the parts up; nothing is called, opened or imported anew.
    """
    if hiredis is None:
        return "hiredis is not installed"
    for name in ("Reader", "pack_command", "ReplyError"):
        if not hasattr(hiredis, name):
            return f"hiredis {getattr(hiredis, '__version__', '?')} has no {name}"
    return None


class _Moved(Exception):
    """-MOVED for otpgate's slot: the command did not run; send it to ``to``."""

    def __init__(self, message: str, to: HostPort, deadline: float) -> None:
        super().__init__(message)
        self.to = to
        self.deadline = deadline


def _moved_target(message: str, slot: int) -> HostPort | None:
    """Where ``-MOVED <slot> <endpoint>:<port>`` sends ``slot``; None for another slot
    (a command on someone else's key) or anything else."""
    parts = message.split(" ")
    if len(parts) != 3 or parts[0] != "MOVED" or parts[1] != str(slot):
        return None
    host, _, port = parts[2].rpartition(":")
    if not host or not port.isdigit():
        return None
    return HostPort(host, int(port))


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: PipelinedConnection) -> None:
        self._owner = owner
        self._reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        # Why the connection ended (None: closed, by either side, without an error).
        self.ended: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream's transport (uvloop's are not asyncio.Transport subclasses).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._owner._pending
        while (reply := self._reader.gets()) is not False:
            future, deadline = pending.popleft()
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                if message.startswith("READONLY"):
                    # A demoted master: every later write fails the same way. Drop the
                    # connection so the next call finds (or asks Sentinel for) the master.
                    if not future.done():
                        future.set_exception(RedisConnectionError(message))
                    self._owner._lost(self, "the server is a read-only replica now")
                    return
                error: Exception = RedisReplyError(message)
                if self._owner._slot is not None:
                    error = self._owner._cluster_error(self, message, deadline) or error
                if not future.done():
                    future.set_exception(error)
            elif not future.done():
                future.set_result(reply)
        if not pending and self._owner._retiring is self:
            self._owner._lost(self, "every reply in, moving to another node")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(exc)
        self._owner._lost(self, "connection lost", exc)


class PipelinedConnection:
    def __init__(
        self, url: RedisUrl, *, timeout: float, tls: RedisTls | None = None, slot: int = 0
    ) -> None:
        """``slot``: with a ClusterUrl, the hash slot of every key the caller sends."""
        self._url = url
        server = url if isinstance(url, ServerUrl) else None
        self._server = server.address if server else None  # else Sentinel or Cluster names it
        self._socket_path = server.socket_path if server else None
        self._ssl: ssl.SSLContext | None = (
            (tls or RedisTls()).context()
            if isinstance(url, ServerUrl | ClusterUrl) and url.tls
            else None
        )
        login = url.login
        self._hello: list[tuple[Any, ...]] = []
        if login.password:
            self._hello.append(
                ("AUTH", login.username, login.password)
                if login.username
                else ("AUTH", login.password)
            )
        if login.db:
            self._hello.append(("SELECT", login.db))
        if self._ssl is not None and not self._hello:
            # A TLS 1.3 server checks the client's certificate after the handshake: one
            # round trip before any caller's command tells a refusal from a connection.
            self._hello.append(("PING",))
        self._tls = tls
        self._timeout = timeout
        self._sentinels: Sentinels | None = None
        self._watch: SentinelWatch | None = None
        if isinstance(url, SentinelUrl):
            self._sentinels = Sentinels(url.sentinels, url.master_name, timeout)
            self._watch = SentinelWatch(self._sentinels, self._connected_to, self._moved)
        # On Cluster: the slot, who serves it, where the last -MOVED pointed (tried
        # first at the next connection), and the connection being left for another node,
        # whose replies are still coming in.
        self._slot: int | None = slot if isinstance(url, ClusterUrl) else None
        self._slot_owner: SlotOwner | None = (
            SlotOwner(url, slot, timeout, tls) if isinstance(url, ClusterUrl) else None
        )
        self._moved_to: HostPort | None = None
        self._retiring: _Protocol | None = None
        self._left: asyncio.Future[None] | None = None
        self._address: HostPort | None = None  # where the open connection goes
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._outgoing: list[bytes] = []

    async def execute(self, *args: Any) -> Any:
        transport = self._transport
        if transport is None or transport.is_closing():
            # Connecting and the command share one deadline: the call's own timeout.
            deadline = time.monotonic() + self._timeout
            await self._connect()
            future = self._send(args, deadline)
        else:
            future = self._send(args)
        try:
            return await future
        except _Moved as moved:
            return await self._follow(args, moved)

    async def _follow(self, args: tuple[Any, ...], moved: _Moved) -> Any:
        """Send a command that was -MOVED again, on the node named, by its deadline."""
        for _ in range(_MAX_MOVES):
            if moved.deadline <= time.monotonic():
                break
            transport = self._transport
            if transport is None or transport.is_closing():
                await self._connect(moved.deadline)
            try:
                return await self._send(args, moved.deadline)
            except _Moved as again:
                moved = again
        raise RedisConnectionError(f"not followed in time: {moved}")

    def _send(
        self,
        args: tuple[Any, ...],
        deadline: float | None = None,
        transport: asyncio.Transport | None = None,
    ) -> asyncio.Future[Any]:
        transport = transport or self._transport
        if transport is None or transport.is_closing():
            raise RedisNotSent("not connected")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        # Queue the command and its caller with no await in between: replies come back
        # in this order. Commands queued in one loop turn leave in one write.
        self._pending.append((future, deadline or time.monotonic() + self._timeout))
        if not self._outgoing:
            loop.call_soon(self._flush, transport)
        self._outgoing.append(hiredis.pack_command(args))
        if self._watchdog is None:
            self._watchdog = loop.call_later(_WATCHDOG_SECONDS, self._check_deadlines)
        return future

    def _flush(self, transport: asyncio.Transport) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if outgoing and not transport.is_closing():
            transport.write(b"".join(outgoing))

    async def _connect(self, deadline: float | None = None) -> None:
        # Concurrent callers share one connection attempt. It ends within the timeout
        # from its start, so before the deadline of any caller who joined it later;
        # a caller with an earlier ``deadline`` (one following a -MOVED) waits until then.
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
        try:
            if deadline is None:
                await asyncio.shield(self._connecting)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError()
                await asyncio.wait_for(asyncio.shield(self._connecting), left)
        except ssl.SSLCertVerificationError as exc:
            raise RedisMisconfigured(
                f"the server's TLS certificate was refused: {refusal_text(exc)}"
            ) from exc
        except (OSError, TimeoutError) as exc:
            raise RedisNotSent(f"cannot connect: {type(exc).__name__}") from exc

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self._timeout
        factory = lambda: _Protocol(self)  # noqa: E731
        address: HostPort | None
        async with asyncio.timeout(self._timeout):
            if self._left is not None:
                await asyncio.shield(self._left)  # the replies of the node being left
            if self._slot_owner is not None:
                address = self._moved_to or await self._slot_owner.owner()
                self._moved_to = None  # if it fails, the next attempt asks the cluster
            elif self._sentinels is not None:
                address = await self._sentinels.master()
            else:
                address = self._server
            if address is not None:
                opening = loop.create_connection(factory, address.host, address.port, ssl=self._ssl)
            else:
                opening = loop.create_unix_connection(factory, self._socket_path)
            transport, protocol = await opening
        # Callers wait for this attempt until the connection is proven: no command of
        # theirs reaches a server before AUTH, SELECT, (with Sentinel) ROLE, or over TLS
        # at least a PING.
        self._protocol = protocol
        try:
            await self._prove(transport, address, deadline)
        except RedisConnectionError as exc:
            transport.abort()
            if await self._wants_certificate(protocol, address, deadline):
                raise ClientCertificateRequired() from exc
            raise
        except BaseException:
            transport.abort()
            raise
        self._transport, self._address = transport, address
        if self._watch is not None:
            self._watch.start()

    async def _prove(
        self, transport: asyncio.Transport, address: HostPort | None, deadline: float
    ) -> None:
        for command in self._hello:
            await self._send(command, deadline, transport)
        if isinstance(self._url, SentinelUrl):
            role = await self._send(("ROLE",), deadline, transport)
            if role[0] != b"master":
                raise RedisConnectionError(f"{address} is a {role[0].decode()} now, not the master")

    async def _wants_certificate(
        self, protocol: _Protocol, address: HostPort | None, deadline: float
    ) -> bool:
        """Whether a connection lost while being proven was the server refusing a client
        without a certificate: its alert, or (the alert lost to a reset) a second, silent
        connection's."""
        if self._ssl is None or address is None:
            return False
        if wants_client_certificate(await _end_of(protocol, deadline), self._tls):
            return True
        left = deadline - time.monotonic()
        return await demands_client_certificate(address.host, address.port, self._tls, left)

    def _connected_to(self) -> HostPort | None:
        return self._address if self._transport is not None else None

    def _cluster_error(
        self, protocol: _Protocol, message: str, deadline: float
    ) -> Exception | None:
        """A Cluster reply that moves the link: the error its caller gets, or None."""
        to = _moved_target(message, self._slot or 0)
        if to is not None:
            self._leave(protocol, to)
            return _Moved(message, to, deadline)
        if message.startswith(_CLUSTER_DOWN):
            self._leave(protocol, None)
            return RedisConnectionError(message)
        return None

    def _leave(self, protocol: _Protocol, to: HostPort | None) -> None:
        """Send nothing more on this connection; the next call connects to ``to`` (or
        where CLUSTER SLOTS says) once the replies already sent for have arrived."""
        if protocol is not self._protocol or self._retiring is protocol:
            return
        self._moved_to = to
        self._retiring = protocol
        self._left = asyncio.get_running_loop().create_future()
        self._transport = None
        if not self._pending:
            self._lost(protocol, "moving to another node")

    async def _moved(self, master: HostPort) -> None:
        if self._protocol is not None and self._connected_to() not in (None, master):
            self._lost(self._protocol, f"Sentinel names another master now: {master}")

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

    def _lost(self, protocol: _Protocol, reason: str, cause: Exception | None = None) -> None:
        """``cause``: the error the connection ended with, when the server ended it."""
        if protocol is not self._protocol:
            return  # an old connection's late news
        if protocol.transport is not None:
            protocol.transport.abort()
        self._transport = self._protocol = self._retiring = None
        left, self._left = self._left, None
        if left is not None and not left.done():
            left.set_result(None)
        self._outgoing = []
        pending, self._pending = self._pending, collections.deque()
        refused = wants_client_certificate(cause, self._tls)
        for future, _ in pending:
            if not future.done():
                future.set_exception(
                    ClientCertificateRequired() if refused else RedisConnectionError(reason)
                )

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._protocol is not None:
            self._lost(self._protocol, "closed")
        if self._sentinels is not None:
            await self._sentinels.close()
        if self._slot_owner is not None:
            await self._slot_owner.close()


async def _end_of(protocol: _Protocol, deadline: float) -> Exception | None:
    """The error ``protocol``'s connection ended with, once it has (it was aborted), or
    None if it ended cleanly or not by ``deadline``."""
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            return await asyncio.shield(protocol.ended)
    except TimeoutError:
        return None
