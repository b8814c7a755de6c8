"""Each connection's limits, and closing one without a reset.

Whichever HTTP protocol a worker runs (the fast one, or uvicorn's own with
``FAST_PATH=false``), each of its connections is wrapped in a ``Guard`` that
sits between the transport and the protocol. The guard uses only asyncio's
protocol and transport interface and uvicorn's ``shutdown()`` (finish the
request in progress with ``connection: close``, else close now), so both paths
get the same behaviour whatever uvicorn does inside. It follows the requests'
framing with a parser of its own (httptools', as uvicorn's protocol does) to
know when a request's headers and body are in.

- **Slow clients.** A request's headers must arrive within ``header_timeout``
  (counted from the connection's opening for its first request, from its first
  byte for a later one) and its body within ``body_timeout`` of its headers.
  Past either, the connection is answered 408, unless an answer is already under
  way or nothing of a request arrived, and closed. Between requests a kept-alive
  connection is uvicorn's, closed after its keep-alive timeout as before; while
  uvicorn itself stops reading (a pipelined request waiting its turn) no clock
  runs. Deadlines are checked every ``SWEEP_SECONDS`` by one timer per worker,
  so a request costs no timer of its own.
- **A cap per worker.** A worker holding ``max_connections`` answers each
  further connection 503 (``retry-after: 1``, ``connection: close``) as soon as
  its request's headers are in, without running the app, and closes it.
  Answered, not refused: a worker only sees a connection after the kernel has
  completed its handshake, so refusing it could only mean closing it unanswered,
  which a client cannot tell from a crash (and which resets a request already
  sent), or leaving it in the accept queue, where it hangs. A 503 says nothing
  was done, so a balancer retries it on another instance, even a POST.
- **Closing without a reset.** A socket closed with unread bytes in its receive
  buffer, or one that receives bytes after it closed, makes the kernel answer
  with a reset, and a request on its way is lost without an answer. So every
  close here lingers: the answer is flushed and the write side shut (a FIN),
  whatever still arrives is read and dropped until the client closes its side,
  and only then, or after ``LINGER_SECONDS``, does the socket close.
- **Draining** (``Connections.drain``, at shutdown). A connection with a request
  in progress finishes it with ``connection: close``. An idle one stays open:
  the next request on it is served and answered with ``connection: close``, and
  the connection closes after that answer. Closing idle ones at once, as uvicorn
  does, is what reset the requests already on their way to them. An idle one is
  closed by its keep-alive timeout, or at the end of the drain (the graceful
  shutdown timeout), each time with the lingering close.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools

log = logging.getLogger("otpgate.connections")

# How long a closing connection waits for the client to close its side.
LINGER_SECONDS = 2.0
# How often the deadlines are checked; a slow client is cut up to this much late.
SWEEP_SECONDS = 0.25


@dataclass(frozen=True)
class ConnectionLimits:
    """What ``otpgate serve`` gives each worker (HTTP_HEADER_TIMEOUT_SECONDS...)."""

    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_connections: int = 1000


def _answer(status: int, code: str, message: str, extra: bytes = b"") -> bytes:
    """A whole answer, in the one body shape of the API's errors."""
    from http import HTTPStatus

    phrase = HTTPStatus(status).phrase
    body = (
        f'{{"statusCode":{status},"error":"{phrase}","message":"{message}","code":"{code}"}}'
    ).encode()
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n".encode()
        + extra
        + b"connection: close\r\n\r\n"
        + body
    )


TIMED_OUT = _answer(408, "request_timeout", "The request did not arrive in time.")
TOO_MANY = _answer(
    503, "too_many_connections", "Too many connections. Please try again.", b"retry-after: 1\r\n"
)


class _Phase(enum.Enum):
    IDLE = 0  # between requests (or waiting for the app's answer): no clock of ours
    HEAD = 1  # a request's headers are due
    BODY = 2  # its body is due


class _State(enum.Enum):
    OPEN = 0  # served by the protocol
    OVER_CAP = 1  # past the cap: answered 503 once its headers are in
    LINGERING = 2  # write side shut; reading what arrives until the client closes


class Connections:
    """One worker's connections: their deadlines, the cap and the drain."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.stopping = False
        self._open: set[Guard] = set()
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._timed_out = 0
        self._turned_away = 0

    def __len__(self) -> int:
        return len(self._open)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "Connections.start() first"
        return self._loop

    def wrap(self, protocol_class: Callable[..., asyncio.Protocol]) -> Callable[..., Guard]:
        """A protocol factory, called as uvicorn calls its ``http`` class: each
        protocol it makes is wrapped in a guard."""

        def guarded(**kwargs: Any) -> Guard:
            return Guard(protocol_class(**kwargs), self)

        return guarded

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._sweeper = self._loop.call_later(SWEEP_SECONDS, self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def add(self, guard: Guard) -> bool:
        """Count ``guard`` in; False when the worker already holds its maximum."""
        self._open.add(guard)
        if len(self._open) <= self.limits.max_connections:
            return True
        self._turned_away += 1
        return False

    def discard(self, guard: Guard) -> None:
        self._open.discard(guard)
        if self._changed is not None:
            self._changed.set()

    def timed_out(self) -> None:
        self._timed_out += 1

    def _sweep(self) -> None:
        now = time.monotonic()
        limits = self.limits
        for guard in list(self._open):
            guard.check(now, limits)
        if self._timed_out:
            log.info(
                "closed connections whose request did not arrive in time",
                extra={"connections": self._timed_out},
            )
            self._timed_out = 0
        if self._turned_away:
            log.warning(
                "answered connections 503: the worker holds its maximum",
                extra={"connections": self._turned_away, "maximum": limits.max_connections},
            )
            self._turned_away = 0
        self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep)

    def drain(self) -> None:
        """From now on each connection closes after its next answer (see the module)."""
        self.stopping = True
        for guard in list(self._open):
            guard.drain()

    def close_idle(self) -> None:
        """The drain is over: close every connection without a request in progress."""
        for guard in list(self._open):
            guard.close_if_idle()

    async def wait_closed(self, deadline: float) -> bool:
        """Wait until every connection has closed, or ``deadline`` (monotonic); whether
        they all did."""
        changed = self._changed
        assert changed is not None, "Connections.start() first"
        while self._open:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), timeout=min(left, 3600))
            except TimeoutError:
                return False
        return True


class Guard(asyncio.Protocol):
    """One connection: the protocol serving it, its deadlines, and its close."""

    def __init__(self, inner: asyncio.Protocol, connections: Connections) -> None:
        self._inner = inner
        self._connections = connections
        parser = httptools.HttpRequestParser(self)
        # As uvicorn's protocol parses: the two must agree on where a request ends.
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self._parser: httptools.HttpRequestParser | None = parser
        self._transport: asyncio.Transport | None = None
        self._state = _State.OPEN
        self._inner_live = False  # the protocol has the connection, not yet its end
        self._phase = _Phase.HEAD
        self._since = time.monotonic()
        self._received = False  # bytes of the request under way have arrived
        self._heads = 0  # requests whose headers were read
        self._answers = 0  # answers begun
        self._paused = False  # the protocol stopped reading: the client is not late
        self._stopping = False
        self._hold_close = False  # inside the protocol's shutdown(): an idle close waits
        self._close_held = False
        self._linger_timer: asyncio.TimerHandle | None = None

    # asyncio's protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if not self._connections.add(self):
            self._state = _State.OVER_CAP
            return
        self._inner_live = True
        self._inner.connection_made(cast(asyncio.Transport, _Transport(self, self._transport)))
        if self._connections.stopping:
            self.drain()

    def data_received(self, data: bytes) -> None:
        if self._state is _State.LINGERING:
            return
        parser = self._parser
        if parser is not None:
            try:
                parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                # The protocol answers it (400, or an upgrade); its timing is no longer ours.
                self._parser = None
                self._phase = _Phase.IDLE
                if self._state is _State.OVER_CAP:
                    self._close()
        if self._state is not _State.OPEN:
            return
        self._inner.data_received(data)
        if self._stopping:
            self._finish_request()

    def eof_received(self) -> bool | None:
        if self._state is _State.OPEN:
            return self._inner.eof_received()
        return None  # the client closed its side: close ours

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _State.LINGERING
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self._connections.discard(self)
        self._inner_lost(exc)

    def pause_writing(self) -> None:
        if self._inner_live:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner_live:
            self._inner.resume_writing()

    # httptools' parser callbacks

    def on_message_begin(self) -> None:
        self._received = True
        if self._heads:  # a later request: its time starts with its first byte
            self._phase, self._since = _Phase.HEAD, time.monotonic()

    def on_headers_complete(self) -> None:
        self._heads += 1
        self._phase, self._since = _Phase.BODY, time.monotonic()
        if self._state is _State.OVER_CAP:
            self._close(TOO_MANY)

    def on_message_complete(self) -> None:
        self._phase = _Phase.IDLE
        self._received = False

    # What the transport proxy reports

    def answer_begins(self) -> None:
        self._answers += 1

    def reading(self, on: bool) -> None:
        self._paused = not on
        if on:
            self._since = time.monotonic()

    def protocol_closes(self) -> None:
        if self._hold_close:
            self._close_held = True
        else:
            self._close()

    @property
    def closing(self) -> bool:
        return self._state is not _State.OPEN

    # The worker's calls

    def check(self, now: float, limits: ConnectionLimits) -> None:
        """Close the connection if its client is late with a request's headers or body."""
        phase = self._phase
        if phase is _Phase.IDLE or self._paused or self._state is _State.LINGERING:
            return
        limit = limits.header_timeout if phase is _Phase.HEAD else limits.body_timeout
        if now - self._since < limit:
            return
        self._connections.timed_out()
        # 408 when each request before this one has its answer begun, and this one not.
        answered_before = self._heads - (1 if phase is _Phase.BODY else 0)
        unanswered = self._received and self._answers == answered_before
        self._close(TIMED_OUT if unanswered else b"")

    def drain(self) -> None:
        self._stopping = True
        if self._state is _State.OPEN:
            self._finish_request()

    def close_if_idle(self) -> None:
        if self._state is _State.OVER_CAP:
            self._close()
            return
        if self._state is not _State.OPEN:
            return
        if self._finish_request():
            self._close(TIMED_OUT if self._received else b"")

    # Inside

    def _finish_request(self) -> bool:
        """uvicorn's shutdown(): the request in progress is to be answered with
        ``connection: close``, after which the protocol closes. Its close of an idle
        connection is held back, leaving it open for the next request; True if so."""
        self._hold_close, self._close_held = True, False
        try:
            self._inner.shutdown()  # type: ignore[attr-defined]
        finally:
            self._hold_close = False
        return self._close_held

    def _close(self, answer: bytes = b"") -> None:
        """Close without a reset: the answer, then a FIN, then read until the client's."""
        if self._state is _State.LINGERING:
            return
        self._state = _State.LINGERING
        self._phase = _Phase.IDLE
        transport = self._transport
        assert transport is not None
        if self._inner_live:
            # Its request, if any, sees the disconnect; its later writes are dropped.
            self._connections.loop.call_soon(self._inner_lost, None)
        if answer and not transport.is_closing():
            transport.write(answer)
        if transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
            transport.resume_reading()
        except OSError:  # the client is gone already
            transport.close()
            return
        self._linger_timer = self._connections.loop.call_later(LINGER_SECONDS, transport.close)

    def _inner_lost(self, exc: Exception | None) -> None:
        if self._inner_live:
            self._inner_live = False
            self._inner.connection_lost(exc)


class _Transport:
    """The transport as the protocol sees it: its closes linger, its answers are
    counted, and nothing it writes after the close goes out."""

    __slots__ = ("_guard", "_transport")

    def __init__(self, guard: Guard, transport: asyncio.Transport) -> None:
        self._guard = guard
        self._transport = transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        guard = self._guard
        if guard.closing:
            return
        if (
            isinstance(data, bytes)
            and data.startswith(b"HTTP/1.")
            and not data.startswith(b"HTTP/1.1 100 ")
        ):
            guard.answer_begins()
        self._transport.write(data)

    def close(self) -> None:
        self._guard.protocol_closes()

    def is_closing(self) -> bool:
        return self._guard.closing or self._transport.is_closing()

    def pause_reading(self) -> None:
        self._guard.reading(False)
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._guard.reading(True)
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
