"""Several workers: each accepts on its own socket, and the parent looks after them."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.service_process import ServiceProcess, free_port, service_env, workers_of

pytestmark = pytest.mark.integration  # every test here starts `otpgate serve`

OTPGATE = [sys.executable, "-m", "otpgate"]


def accepted_by(workers: list[int], port: int, client_ports: set[int]) -> dict[int, int]:
    """How many of the given client connections each worker accepted.

    Each connection's server-side socket is found in the kernel's table by its
    ports, and its owner by the socket inode among the workers' descriptors: the
    connection is counted where it was accepted, however many other sockets the
    worker opens or closes meanwhile.
    """
    owner = {}
    for pid in workers:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[int(link[8:-1])] = pid
    held: dict[int, set[int]] = {pid: set() for pid in workers}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rpartition(":")[2], 16)
            remote_port = int(fields[2].rpartition(":")[2], 16)
            inode = int(fields[9])
            if local_port == port and remote_port in client_ports and inode in owner:
                # By socket: a table read while it changes can list one twice.
                held[owner[inode]].add(inode)
    return {pid: len(sockets) for pid, sockets in held.items()}


def test_connections_are_spread_over_workers(tmp_path: Path) -> None:
    server = ServiceProcess(tmp_path, workers=2)
    try:
        server.wait_ready()
        workers = workers_of(server)
        assert len(workers) == 2
        conns = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(40)]
        for conn in conns:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        for conn in conns:
            assert conn.recv(65536).startswith(b"HTTP/1.1 200 ")
        # Every connection answered and still open: each is held by the worker that took it.
        accepted = accepted_by(workers, server.port, {c.getsockname()[1] for c in conns})
        for conn in conns:
            conn.close()
        assert sum(accepted.values()) == 40, accepted
        # Spread by the kernel's hash: each worker gets a fair share (failing odds ~4e-5).
        assert min(accepted.values()) >= 8, accepted
    finally:
        server.stop()


def wait_until(done: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_start_up_warnings_are_logged_once_not_once_per_worker(tmp_path: Path) -> None:
    server = ServiceProcess(tmp_path, workers=2, TEST_PHONE_NUMBERS="+12125550100=123456")
    try:
        server.wait_ready()
        wait_until(lambda: len(server.ready_workers()) == 2)
        # A worker that replaces a dead one does not log them either.
        os.kill(server.ready_workers()[0], signal.SIGKILL)
        wait_until(lambda: len(server.ready_workers()) == 3)
    finally:
        out = server.stop()
    assert out.count("TEST_PHONE_NUMBERS: test numbers active") == 1, out


def test_a_dead_worker_is_replaced_on_its_socket(tmp_path: Path) -> None:
    server = ServiceProcess(tmp_path, workers=2)
    try:
        server.wait_ready()
        first, second = workers_of(server)
        os.kill(first, signal.SIGKILL)
        # Every new connection must be answered, whichever socket it is hashed to.
        for _ in range(60):
            assert httpx.get(f"{server.base}/health", timeout=10).status_code == 200
        replaced = workers_of(server)
        assert second in replaced and first not in replaced and len(replaced) == 2
    finally:
        server.stop()


def test_sigterm_stops_every_worker(tmp_path: Path) -> None:
    server = ServiceProcess(tmp_path, workers=2)
    server.wait_ready()
    workers = workers_of(server)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists()  # exited and reaped by the parent


def test_port_in_use_is_refused(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = subprocess.run(
            [*OTPGATE, "serve", "--workers", "2", "--port", str(port)],
            env=service_env(tmp_path),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_a_running_service_survives_repeated_kills(tmp_path: Path) -> None:
    """What an OOM killer does, ten times in a minute: the service is still there after."""
    server = ServiceProcess(tmp_path, workers=2, LOG_FORMAT="json")
    try:
        server.wait_ready()
        server.wait_for_line(lambda line: len(server.ready_workers()) >= 2)
        started = time.monotonic()
        killed: set[int] = set()
        for _ in range(10):
            # The oldest serving worker: its replacement is next in line, so the
            # kills alternate between the two sockets.
            victim = next(pid for pid in server.ready_workers() if pid not in killed)
            announced = len(server.ready_workers())
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
            server.wait_for_line(lambda line, n=announced: len(server.ready_workers()) > n)
            for _ in range(6):  # new connections, hashed to either socket
                assert httpx.get(f"{server.base}/health", timeout=10).status_code == 200
        assert time.monotonic() - started < 60
        assert server.proc.poll() is None, "the supervisor must not give up on a running service"
    finally:
        out = server.stop()
    supervisor = [
        json.loads(line) for line in out.splitlines() if '"logger":"otpgate.workers"' in line
    ]
    exits = [line for line in supervisor if line["msg"] == "worker exited; starting another"]
    assert len(exits) == 10, out
    assert all(line["level"] == "warning" and line["exit_code"] == -9 for line in exits)
    assert "stopping" not in out


def test_workers_that_fail_at_start_up_stop_the_supervisor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every start failing means every start will: give up rather than loop forever."""
    from otpgate.runtime.workers import MAX_START_FAILURES, Supervisor, listening_sockets

    config = {"app": "tests.no_such_module:app", "log_config": None, "lifespan": "on"}
    sockets = listening_sockets("127.0.0.1", free_port(), 2)
    with caplog.at_level(logging.INFO, logger="otpgate.workers"):
        assert Supervisor(config, sockets, grace=1).run() == 1
    failures = [r for r in caplog.records if "failing during start-up" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].failures == MAX_START_FAILURES  # type: ignore[attr-defined]
