"""Several uvicorn workers, each accepting on a listening socket of its own.

uvicorn's own workers share one listening socket, and whichever is awake first
accepts. With a few long-lived keep-alive connections (a load balancer's pool,
the benchmark's 50) one worker sometimes ends up with nearly all of them: seen
in 1 of 5 runs here, at half the throughput and 1.5x the p99. Here the parent
binds one socket per worker with SO_REUSEPORT, so the kernel spreads new
connections across them by hash, and worker *i* always serves socket *i*: a
worker that dies is replaced on the same socket, whose backlog waits for it.

The parent only supervises: it forwards SIGTERM/SIGINT (each worker then drains
gracefully, as uvicorn does) and replaces a worker that dies, giving up when
workers keep dying right after start.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time
from collections import deque
from multiprocessing.context import SpawnProcess
from typing import Any

log = logging.getLogger("otpgate.workers")

# A worker that died this many times within CRASH_WINDOW_SECONDS is not replaced
# again: something is wrong with every start, not with one request.
MAX_CRASHES = 5
CRASH_WINDOW_SECONDS = 60.0
_POLL_SECONDS = 0.5


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


def _worker(config: dict[str, Any], sock: socket.socket) -> None:  # pragma: no cover
    """A worker process: one uvicorn server on its own socket."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(**config)).run(sockets=[sock])


class Supervisor:
    def __init__(self, config: dict[str, Any], sockets: list[socket.socket], grace: float):
        self._config = config
        self._sockets = sockets
        self._grace = grace
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[SpawnProcess] = []
        self._crashes: deque[float] = deque()
        self._stop = threading.Event()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        self._processes = [self._start(sock) for sock in self._sockets]
        code = 0
        while not self._stop.wait(_POLL_SECONDS):
            if not self._replace_dead():
                code = 1
                break
        self._shutdown()
        return code

    def _start(self, sock: socket.socket) -> SpawnProcess:
        process = self._context.Process(target=_worker, args=(self._config, sock), daemon=False)
        process.start()
        return process

    def _replace_dead(self) -> bool:
        """Replace each dead worker on its own socket; False when they keep dying."""
        for index, process in enumerate(self._processes):
            if process.is_alive() or self._stop.is_set():
                continue
            now = time.monotonic()
            self._crashes.append(now)
            while self._crashes and now - self._crashes[0] > CRASH_WINDOW_SECONDS:
                self._crashes.popleft()
            if len(self._crashes) >= MAX_CRASHES:
                log.error("workers keep exiting (last exit code %s); stopping", process.exitcode)
                return False
            log.warning(
                "worker %s exited (code %s); starting another", process.pid, process.exitcode
            )
            self._processes[index] = self._start(self._sockets[index])
        return True

    def _shutdown(self) -> None:
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: uvicorn drains, then exits
        deadline = time.monotonic() + self._grace + 5
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for sock in self._sockets:
            sock.close()
