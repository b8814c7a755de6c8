"""A private redis-server on a free loopback port, for tests that stop and restart it,
and the session's Redis (``redis_url``).

The shared Redis at REDIS_URL (default redis://127.0.0.1:6379/0) is never stopped by
tests; when none answers there, ``redis_url`` starts a private one for the session.
Outage tests use a private one of their own, and so do the TLS and Sentinel tests
(``ServerTls``; a config file first for a sentinel).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

TEST_REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerTls:
    """TLS only (no plain port): the server's certificate and key, the CA it trusts for
    client certificates, and whether it asks for one (then ``client`` is the tests')."""

    cert: Path
    key: Path
    ca: Path
    client: tuple[Path, Path] | None = None  # certificate and key, for mutual TLS

    def args(self, port: int) -> list[str]:
        return [
            *("--port", "0", "--tls-port", str(port)),
            *("--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key)),
            *("--tls-ca-cert-file", str(self.ca)),
            *("--tls-auth-clients", "yes" if self.client else "no"),
        ]

    def client_options(self) -> dict[str, Any]:
        """For the tests' own probes: the certificate is not checked (a test may give the
        server one that is wrong on purpose); a client certificate is presented."""
        certfile, keyfile = self.client or (None, None)
        return {
            "ssl": True,
            "ssl_cert_reqs": "none",
            "ssl_certfile": certfile,
            "ssl_keyfile": keyfile,
        }


class PrivateRedis:
    def __init__(
        self,
        workdir: Path,
        *extra_args: str,
        tls: ServerTls | None = None,
        config: Path | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; outage tests need it", pytrace=False)
        self._binary = binary
        self._workdir = workdir
        self._extra = list(extra_args)
        self._tls = tls
        self._config = config  # a sentinel's file (it rewrites it), given first
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self._tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def client(self, **options: Any) -> redis.Redis:
        tls = self._tls.client_options() if self._tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, **tls, **options)

    def start(self) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        port_args = self._tls.args(self.port) if self._tls else ["--port", str(self.port)]
        self._proc = subprocess.Popen(
            [
                self._binary,
                *([str(self._config)] if self._config else []),
                *("--bind", "127.0.0.1", *port_args),
                *("--save", "", "--appendonly", "no", "--dir", str(self._workdir)),
                *self._extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # No retries inside a probe (redis-py's default backs off for seconds).
        client = self.client(socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
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


def redis_problem(url: str) -> str | None:
    """Why the Redis at ``url`` does not answer a PING, or None when it does."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return str(exc) or type(exc).__name__
    finally:
        client.close()
    return None


@pytest.fixture(scope="session")
def redis_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """REDIS_URL when a Redis answers there; else a redis-server of this session's own,
    on a free loopback port, stopped at the session's end."""
    problem = redis_problem(TEST_REDIS_URL)
    if problem is None:
        yield TEST_REDIS_URL
        return
    if shutil.which("redis-server") is None:
        pytest.fail(
            f"Redis is required for these tests: none answers at {TEST_REDIS_URL} ({problem})"
            " and redis-server is not installed to start one (`make system-deps` installs"
            " it). Install it, or point REDIS_URL at a Redis.",
            pytrace=False,
        )
    server = PrivateRedis(tmp_path_factory.mktemp("session-redis"))
    server.start()
    _say(
        request.config,
        f"no Redis answers at {TEST_REDIS_URL} ({problem}): these tests use a"
        f" redis-server of their own at {server.url} (pid {server.pid})",
    )
    try:
        yield server.url
    finally:
        server.stop()


def _say(config: pytest.Config, line: str) -> None:
    """One line on the terminal, past the output capture (none in an xdist worker)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(line, yellow=True)
