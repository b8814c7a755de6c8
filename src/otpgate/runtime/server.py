"""The uvicorn server each worker runs, stopping without resetting a connection.

Each connection is guarded (``connections``): deadlines for a request's headers
and body, a cap per worker, and closes that never reset.

On SIGTERM it stops taking new connections at once (``listener``: the kernel
drops new SYNs, so clients are refused once the socket closes, and a balancer
retries them), keeps accepting what was already queued until the queue is empty,
and closes its listening sockets. Then the connections already open drain: each
request in progress, and each one that still arrives on an open connection, is
served and answered with ``connection: close``, and its connection closed after
the answer; an idle connection stays open for its next request until its
keep-alive timeout. The drain ends when every connection has closed, or at the
graceful shutdown timeout (counted from the signal), when the idle ones left are
closed and uvicorn's own shutdown cancels what is still running. Every close
lingers (the write side shut, then what arrives read until the client closes),
so the kernel never answers a request on its way with a reset.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import cast

import uvicorn

from otpgate.runtime import listener
from otpgate.runtime.connections import LINGER_SECONDS, ConnectionLimits, Connections

log = logging.getLogger("otpgate.server")

# After the filter is on, handshakes already under way still complete (an ACK in
# flight); a queue that looks empty sooner may not be yet.
HANDSHAKE_SECONDS = 0.05
# Connections queued when the shutdown starts are accepted within this.
DRAIN_SECONDS = 1.0
_POLL_SECONDS = 0.005


class Server(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        on_ready: Callable[[], None] | None = None,
        limits: ConnectionLimits | None = None,
    ):
        super().__init__(config)
        self._on_ready = on_ready
        self._stopped_at: float | None = None
        self.connections = Connections(limits or ConnectionLimits())

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn makes each connection's protocol from this class: wrap what it makes.
        config = self.config
        protocol = config.http_protocol_class
        config.http_protocol_class = cast(type[asyncio.Protocol], self.connections.wrap(protocol))
        self.connections.start()
        await super().startup(sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._stop_new_connections()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._stop_new_connections()
        settled = (self._stopped_at or time.monotonic()) + HANDSHAKE_SECONDS
        # The servers are still accepting: wait until they have taken every queued one
        # (a kernel counter, polled: nothing signals it).
        for _ in range(int(DRAIN_SECONDS / _POLL_SECONDS)):
            if time.monotonic() >= settled and not any(
                listener.queued(s) for s in self._listening()
            ):
                break
            await asyncio.sleep(_POLL_SECONDS)
        for server in self.servers:
            server.close()
        await self._drain()
        await super().shutdown(sockets)
        # The last answers' connections are still lingering: let them close cleanly.
        await self.connections.wait_closed(time.monotonic() + LINGER_SECONDS)
        self.connections.stop()

    async def _drain(self) -> None:
        """Serve what arrives on open connections until they have all closed, or until
        the graceful shutdown timeout; then close the idle ones left, and leave uvicorn
        what remains of the timeout for the requests still in flight."""
        timeout = self.config.timeout_graceful_shutdown
        deadline = (self._stopped_at or time.monotonic()) + (
            math.inf if timeout is None else timeout
        )
        connections = self.connections
        log.info(
            "not listening any more; serving the open connections until they close",
            extra={"connections": len(connections)},
        )
        connections.drain()
        if not await connections.wait_closed(deadline):
            connections.close_idle()
        if timeout is not None:
            # uvicorn's shutdown waits for the requests in flight (what is left of the
            # timeout, at least a second, in whole seconds), then cancels them.
            self.config.timeout_graceful_shutdown = max(1, math.ceil(deadline - time.monotonic()))

    def _listening(self) -> Iterator[socket.socket]:
        for server in self.servers:
            yield from server.sockets

    def _stop_new_connections(self) -> None:
        if self._stopped_at is not None:
            return
        self._stopped_at = time.monotonic()
        for sock in self._listening():
            problem = listener.stop_new_connections(sock)
            if problem is not None:
                log.warning("cannot stop new connections before closing: %s", problem)
                return
