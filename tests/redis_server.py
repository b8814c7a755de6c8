"""A private redis-server on a free loopback port, for tests that stop and restart it.

The shared Redis on 6379 is never stopped by tests; outage tests use this one.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    def __init__(self, workdir: Path, *extra_args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; outage tests need it", pytrace=False)
        self._binary = binary
        self._workdir = workdir
        self._extra = list(extra_args)
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                self._binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._workdir),
                *self._extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        try:
            # Readiness poll with a bound: the server answers (even "auth required")
            # once it accepts clients.
            for _ in range(200):
                try:
                    if client.ping():
                        return
                except redis.AuthenticationError:
                    return
                except redis.ResponseError as exc:
                    if "NOAUTH" in str(exc):
                        return
                    raise
                except redis.ConnectionError:
                    if self._proc.poll() is not None:
                        break
                    self._proc_wait(0.025)
            pytest.fail(f"private redis-server did not start on port {self.port}", pytrace=False)
        finally:
            client.close()

    def _proc_wait(self, seconds: float) -> None:
        assert self._proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=seconds)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing, as a stalled one."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
