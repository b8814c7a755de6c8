"""Several uvicorn workers, each accepting on a listening socket of its own.

uvicorn's own workers share one listening socket, and whichever is awake first
accepts. With a few long-lived keep-alive connections (a load balancer's pool,
the benchmark's 50) one worker sometimes ends up with nearly all of them: seen
in 1 of 5 runs here, at half the throughput and 1.5x the p99. Here the parent
binds one socket per worker with SO_REUSEPORT, so the kernel spreads new
connections across them by hash, and worker *i* always serves socket *i*: a
worker that dies is replaced on the same socket, whose backlog waits for it.
With ADMIN_PORT, worker *i* also serves admin socket *i* (a second group of its own).

The parent only supervises:
- A worker that dies after it was serving (an OOM kill, a crash) is always
  replaced, after a backoff that grows while that socket's workers keep dying
  and resets once one has served for a while. A running service never gives up.
- Only workers that die *before* they were ready count toward giving up: when
  ``MAX_START_FAILURES`` starts in a row fail, every start will (bad
  configuration, a missing dependency), and the parent exits 1.
- SIGTERM/SIGINT: the parent closes its copies of the listening sockets at once
  and passes the signal on; each worker stops taking new connections, accepts the
  ones already queued, closes its socket (``otpgate.runtime.server``), so new connections
  are refused (a load balancer retries those), never reset; then it drains the
  connections already open: what arrives on them is served and answered with
  ``connection: close``, and each closes once idle, without a reset.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from typing import Any

from otpgate.runtime.connections import ConnectionLimits

log = logging.getLogger("otpgate.workers")

# Workers that died in a row before they were ready: then every start fails.
MAX_START_FAILURES = 5
# Replacement delay: doubles per death within STABLE_SECONDS, up to the maximum.
RESTART_BASE_SECONDS = 0.1
RESTART_MAX_SECONDS = 5.0
# A worker that served this long resets its socket's backoff.
STABLE_SECONDS = 30.0
_POLL_SECONDS = 0.05


def listening_sockets(host: str, port: int, count: int, backlog: int = 2048) -> list[socket.socket]:
    """``count`` sockets on one address, in one SO_REUSEPORT group."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(backlog)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _worker(
    config: dict[str, Any],
    sockets: list[socket.socket],
    ready: Event,
    limits: ConnectionLimits | None,
) -> None:  # pragma: no cover
    """A worker process: one uvicorn server on its own sockets; ``ready`` once serving."""
    import uvicorn

    from otpgate.runtime.server import Server

    Server(uvicorn.Config(**config), on_ready=ready.set, limits=limits).run(sockets=sockets)


@dataclass
class _Slot:
    """One worker's listening sockets (the API's, and the admin one) and the worker."""

    sockets: list[socket.socket]
    process: SpawnProcess | None = None
    ready: Event | None = None
    started_at: float = 0.0
    deaths: int = 0  # deaths since a worker on this socket last served STABLE_SECONDS
    restart_at: float | None = None
    announced: bool = False  # its readiness was logged


class Supervisor:
    def __init__(
        self,
        config: dict[str, Any],
        sockets: list[socket.socket],
        grace: float,
        admin_sockets: Sequence[socket.socket] = (),
        limits: ConnectionLimits | None = None,
    ):
        """``admin_sockets``: none, or one per socket in ``sockets`` (ADMIN_PORT)."""
        if admin_sockets and len(admin_sockets) != len(sockets):
            raise ValueError("one admin socket per worker")
        self._config = config
        self._limits = limits
        admin = [[sock] for sock in admin_sockets] or [[] for _ in sockets]
        self._slots = [_Slot([sock, *own]) for sock, own in zip(sockets, admin, strict=True)]
        self._grace = grace
        self._context = multiprocessing.get_context("spawn")
        self._start_failures = 0
        self._stop = threading.Event()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        for slot in self._slots:
            self._start(slot)
        code = 0
        while not self._stop.wait(_POLL_SECONDS):
            if not self._tend():
                code = 1
                break
        self._shutdown()
        return code

    def _start(self, slot: _Slot) -> None:
        ready = self._context.Event()
        process = self._context.Process(
            target=_worker, args=(self._config, slot.sockets, ready, self._limits), daemon=False
        )
        process.start()
        slot.process, slot.ready, slot.announced = process, ready, False
        slot.started_at, slot.restart_at = time.monotonic(), None

    def _tend(self) -> bool:
        """Replace dead workers when their backoff is over; False to give up."""
        now = time.monotonic()
        for slot in self._slots:
            if self._stop.is_set():
                return True
            process, ready = slot.process, slot.ready
            if slot.restart_at is not None:
                if now >= slot.restart_at:
                    self._start(slot)
                continue
            assert process is not None and ready is not None
            was_ready = ready.is_set()
            if process.is_alive():
                if was_ready:
                    if not slot.announced:
                        slot.announced = True
                        log.info("worker ready", extra={"pid": process.pid})
                    self._start_failures = 0
                    if slot.deaths and now - slot.started_at >= STABLE_SECONDS:
                        slot.deaths = 0
                continue
            if not was_ready:
                self._start_failures += 1
                if self._start_failures >= MAX_START_FAILURES:
                    log.error(
                        "workers keep failing during start-up; stopping",
                        extra={"failures": self._start_failures, "exit_code": process.exitcode},
                    )
                    return False
            slot.deaths += 1
            delay = min(RESTART_MAX_SECONDS, RESTART_BASE_SECONDS * 2 ** (slot.deaths - 1))
            slot.restart_at = now + delay
            log.warning(
                "worker exited; starting another",
                extra={
                    "pid": process.pid,
                    "exit_code": process.exitcode,
                    "was_serving": was_ready,
                    "restart_in_seconds": round(delay, 2),
                },
            )
        return True

    def _shutdown(self) -> None:
        # Our copies first: once each worker closes its own, the socket is gone and
        # new connections are refused instead of waiting in a queue nobody reads.
        for slot in self._slots:
            for sock in slot.sockets:
                sock.close()
        processes = [s.process for s in self._slots if s.process is not None]
        for process in processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: uvicorn stops accepting, drains, then exits
        deadline = time.monotonic() + self._grace + 5
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker did not stop in time; killing it", extra={"pid": process.pid})
                process.kill()
                process.join()
        log.info("stopped", extra={"workers": len(processes)})
