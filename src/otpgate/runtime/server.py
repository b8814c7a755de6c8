"""The uvicorn server each worker runs, stopping without resetting a connection.

On SIGTERM it stops taking new connections at once (``listener``: the kernel
drops new SYNs, so clients are refused once the socket closes, and a balancer
retries them), keeps accepting what was already queued until the queue is empty,
and only then lets uvicorn close the sockets and drain the requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

from otpgate.runtime import listener

log = logging.getLogger("otpgate.server")

# After the filter is on, handshakes already under way still complete (an ACK in
# flight); a queue that looks empty sooner may not be yet.
HANDSHAKE_SECONDS = 0.05
# Connections queued when the shutdown starts are accepted within this.
DRAIN_SECONDS = 1.0
_POLL_SECONDS = 0.005


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None = None):
        super().__init__(config)
        self._on_ready = on_ready
        self._stopped_at: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
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
        await super().shutdown(sockets)

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
