"""Each connection's limits and its close, against `otpgate serve` with two workers, on
the fast protocol and on uvicorn's own (FAST_PATH=false): a graceful shutdown resets no
keep-alive connection and leaves no request unanswered, slow clients are cut off, and a
worker past its cap answers 503."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import select
import signal
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from tests.service_process import ServiceProcess, workers_of

pytestmark = pytest.mark.integration  # every test here starts `otpgate serve`

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
CYCLES = 5  # each scenario, so that a one-in-five failure shows


class Unanswered(Exception):
    """The service closed the connection after a request was sent, without its answer."""


def read_answer(sock: socket.socket) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One whole answer: status line, headers (lowercase names), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise Unanswered(data)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines)}
    while len(body) < int(headers.get(b"content-length", b"0")):
        chunk = sock.recv(65536)
        if not chunk:
            raise Unanswered(data)
        body += chunk
    return status, headers, body


@contextlib.contextmanager
def service(tmp_path: Path, fast_path: bool, **env: str) -> Iterator[ServiceProcess]:
    """`otpgate serve --workers 2`, both workers serving; killed after, and its output
    checked for tracebacks."""
    server = ServiceProcess(tmp_path, workers=2, FAST_PATH=str(fast_path).lower(), **env)
    try:
        server.wait_ready()
        server.wait_for_line(lambda _: len(server.ready_workers()) >= 2)
        yield server
    finally:
        out = server.stop()
    assert "Traceback" not in out, out


def raise_open_files(needed: int) -> None:
    """Raise this process's soft limit on open files (the service inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"this test needs {needed} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# --- a graceful shutdown under keep-alive load -------------------------------------------


@dataclass
class Tally:
    """What 40 keep-alive clients saw during one cycle."""

    answered: int = 0
    asked_to_close: int = 0  # answers carrying `connection: close`
    closed_before_sending: int = 0  # the service closed an idle connection: clean
    refused: int = 0
    reset: int = 0
    unanswered: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def add(self, **counts: int) -> None:
        with self.changed:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)
            self.changed.notify_all()


def keep_alive_client(port: int, tally: Tally) -> None:
    """Requests back to back on one connection, a new one after each close, until the
    service refuses to connect."""
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:  # refused (or a SYN dropped until the socket closed)
            tally.add(refused=1)
            return
        with sock:
            while True:
                try:
                    readable, _, _ = select.select([sock], [], [], 0)
                    if readable:  # nothing is due: only a close can be waiting
                        if sock.recv(1) == b"":
                            tally.add(closed_before_sending=1)
                        else:
                            tally.add(unanswered=1)  # bytes nobody asked for
                        break
                    sock.sendall(HEALTH)
                    status, headers, _ = read_answer(sock)
                except (ConnectionResetError, BrokenPipeError):
                    tally.add(reset=1)
                    break
                except (Unanswered, TimeoutError):
                    tally.add(unanswered=1)
                    break
                assert status == b"HTTP/1.1 200 OK", status
                if headers.get(b"connection", b"").lower() == b"close":
                    tally.add(answered=1, asked_to_close=1)
                    break
                tally.add(answered=1)


def test_sigterm_under_keep_alive_load_resets_nothing(tmp_path: Path, fast_path: bool) -> None:
    """40 clients, each sending requests as fast as it can on a kept-alive connection,
    through five SIGTERMs: every request sent is answered; none is reset."""
    cycles: list[Tally] = []
    for _ in range(CYCLES):
        tally = Tally()
        with service(tmp_path, fast_path) as server:
            clients = [
                threading.Thread(target=keep_alive_client, args=(server.port, tally), daemon=True)
                for _ in range(40)
            ]
            for client in clients:
                client.start()
            with tally.changed:  # every client well under way
                under_way = tally.changed.wait_for(lambda t=tally: t.answered >= 800, timeout=20)
                assert under_way, tally
            assert tally.refused + tally.reset + tally.unanswered == 0, tally
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
            for client in clients:
                client.join(timeout=30)
            assert not any(c.is_alive() for c in clients)
        cycles.append(tally)
    print(
        "keep-alive SIGTERM cycles (answered/asked to close/closed idle/reset/unanswered): "
        + "; ".join(
            f"{t.answered}/{t.asked_to_close}/{t.closed_before_sending}/{t.reset}/{t.unanswered}"
            for t in cycles
        )
    )
    assert [(t.reset, t.unanswered) for t in cycles] == [(0, 0)] * CYCLES, cycles
    # The requests that came after the signal were answered, with `connection: close`.
    assert all(t.asked_to_close > 0 for t in cycles), cycles


def test_an_idle_connection_is_served_after_sigterm(tmp_path: Path, fast_path: bool) -> None:
    """Kept-alive and fresh connections idle at SIGTERM: a request sent on them once the
    service has stopped listening is still answered, with `connection: close`, and the
    connection then closes cleanly."""
    with service(tmp_path, fast_path) as server:
        used = []
        for _ in range(CYCLES):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(HEALTH)
            assert read_answer(sock)[0] == b"HTTP/1.1 200 OK"
            used.append(sock)
        fresh = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(5)]
        server.proc.send_signal(signal.SIGTERM)
        # Both workers are draining, and their sockets are closed.
        server.wait_for_line(lambda _: server.output.count("not listening any more") >= 2)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=10).close()
        for sock in used + fresh:
            with sock:
                sock.sendall(HEALTH)
                status, headers, body = read_answer(sock)
                assert status == b"HTTP/1.1 200 OK" and body == b'{"status":"ok"}'
                assert headers[b"connection"] == b"close"
                assert sock.recv(1) == b""  # a clean close, not a reset
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)


# --- slow clients ----------------------------------------------------------------------


def worker_rss(pids: list[int]) -> dict[int, int]:
    """Each worker's resident memory, in kB."""
    rss = {}
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss[pid] = int(line.split()[1])
    return rss


async def slow_client(port: int, interval: float) -> tuple[float, bytes]:
    """Headers at one byte per ``interval``: seconds until the service closed, and what
    it said first."""
    opened = time.monotonic()  # before the handshake: the time measured errs long
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(reader.read())  # everything until the service's close
    try:
        for byte in HEALTH:
            writer.write(bytes([byte]))
            done, _ = await asyncio.wait({answer}, timeout=interval)
            if done:
                break
        data = await asyncio.wait_for(answer, timeout=30)
        return time.monotonic() - opened, data
    finally:
        writer.close()


async def timed_requests(port: int, stop: asyncio.Event) -> list[float]:
    """GET /health on a new connection each (so both workers serve them) until ``stop``."""
    latencies = []
    while not stop.is_set():
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        latencies.append(time.monotonic() - started)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 "), answer
    return latencies


async def slow_wave(
    port: int, count: int, interval: float, workers: list[int]
) -> tuple[list[tuple[float, bytes]], list[float], dict[int, int]]:
    """``count`` slow clients at once, normal requests meanwhile, and each worker's
    highest RSS seen while they were connected."""
    stop = asyncio.Event()
    peak: dict[int, int] = {}

    async def watch_memory() -> None:
        while not stop.is_set():
            for pid, kb in worker_rss(workers).items():
                peak[pid] = max(peak.get(pid, 0), kb)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.1)

    timed = [asyncio.ensure_future(timed_requests(port, stop)) for _ in range(4)]
    watcher = asyncio.ensure_future(watch_memory())
    closes = await asyncio.gather(*(slow_client(port, interval) for _ in range(count)))
    stop.set()
    latencies = [x for batch in await asyncio.gather(*timed) for x in batch]
    await watcher
    return closes, latencies, peak


def test_slow_clients_are_cut_off(tmp_path: Path, fast_path: bool) -> None:
    """1,000 connections sending their headers one byte every 2 s: each is answered 408
    and closed within the header limit plus a second, while normal requests keep a p99
    under a second and the workers' memory stays under twice what it was."""
    header_limit = 2.0
    raise_open_files(4096)
    with service(tmp_path, fast_path, HTTP_HEADER_TIMEOUT_SECONDS=str(header_limit)) as server:
        workers = workers_of(server)
        assert len(workers) == 2
        asyncio.run(slow_wave(server.port, 20, 2.0, workers))  # warm both workers up
        before = worker_rss(workers)
        figures = []
        for _ in range(CYCLES):
            closes, latencies, peak = asyncio.run(slow_wave(server.port, 1000, 2.0, workers))
            took = [seconds for seconds, _ in closes]
            assert all(data.startswith(b"HTTP/1.1 408 ") for _, data in closes), {
                data[:40] for _, data in closes
            }
            assert max(took) <= header_limit + 1, max(took)
            p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else 0.0
            assert latencies and p99 < 1.0, (len(latencies), p99)
            for pid, kb in peak.items():
                assert kb < 2 * before[pid], (peak, before)
            figures.append(
                f"closed after {min(took):.2f}-{max(took):.2f}s, "
                f"{len(latencies)} requests p99 {p99 * 1000:.0f} ms, "
                f"RSS {', '.join(f'{before[p] // 1024}->{peak[p] // 1024} MB' for p in workers)}"
            )
    print("slow clients: " + "; ".join(figures))


def test_a_slow_body_is_cut_off(tmp_path: Path, fast_path: bool) -> None:
    """A body that stops halfway is answered 408 once its limit is past, and closed."""
    with service(tmp_path, fast_path, HTTP_BODY_TIMEOUT_SECONDS="1") as server:
        socks = []
        for _ in range(CYCLES * 2):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(
                b"POST /api/v1/verify-otp HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 60\r\n\r\n"
                b'{"phoneNumber": "+1212'
            )
            socks.append((sock, time.monotonic()))
        for sock, sent in socks:
            with sock:
                status, headers, body = read_answer(sock)
                took = time.monotonic() - sent
                assert status == b"HTTP/1.1 408 Request Timeout", (status, body)
                assert headers[b"connection"] == b"close"
                assert orjson.loads(body)["code"] == "request_timeout"
                assert sock.recv(1) == b""
                assert 1.0 <= took <= 2.0, took


# --- the cap ---------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Look at ``condition`` every 10 ms until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        select.select([], [], [], 0.01)


def held_by_service(port: int) -> int:
    """Connections to ``port`` that a process still holds (an open descriptor)."""
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rpartition(":")[2], 16)
            listening = fields[3] == "0A"
            if local_port == port and not listening and int(fields[9]) != 0:
                held += 1
    return held


def test_connections_past_the_cap_are_answered_503(tmp_path: Path, fast_path: bool) -> None:
    """Each worker holds 5: of 40 connections, 10 are served and 30 answered 503 and
    closed cleanly; once they close, new ones are served again."""
    with service(
        tmp_path, fast_path, HTTP_MAX_CONNECTIONS_PER_WORKER="5", HTTP_HEADER_TIMEOUT_SECONDS="30"
    ) as server:
        for _ in range(CYCLES):
            wait_until(lambda: held_by_service(server.port) == 0)  # the last round's closed
            address = ("127.0.0.1", server.port)
            socks = [socket.create_connection(address, timeout=10) for _ in range(40)]
            statuses = []
            for sock in socks:
                sock.sendall(HEALTH)
                status, headers, body = read_answer(sock)
                statuses.append(status)
                if status != b"HTTP/1.1 200 OK":
                    assert status == b"HTTP/1.1 503 Service Unavailable", status
                    assert headers[b"connection"] == b"close"
                    assert headers[b"retry-after"] == b"1"
                    assert orjson.loads(body)["code"] == "too_many_connections"
                    assert sock.recv(1) == b""  # closed cleanly
            assert statuses.count(b"HTTP/1.1 200 OK") == 10, statuses
            for sock in socks:
                sock.close()
        server.wait_for_line(lambda line: "answered connections 503" in line)
