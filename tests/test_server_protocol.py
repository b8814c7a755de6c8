"""The serving protocol: one write per small response, and nothing held back."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from otpgate.http.server_protocol import CoalescingTransport
from tests.service_process import ServiceProcess

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def coalescing() -> tuple[CoalescingTransport, RecordingTransport]:
    raw = RecordingTransport()
    return CoalescingTransport(cast(asyncio.Transport, raw)), raw


def test_head_and_body_leave_in_one_write() -> None:
    transport, raw = coalescing()
    transport.write(HEAD)
    assert raw.writes == []
    transport.write(b"{}")
    assert raw.writes == [HEAD + b"{}"]
    transport.write(b"more")
    assert raw.writes[-1] == b"more"


def test_interim_continue_is_not_held() -> None:
    transport, raw = coalescing()
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert raw.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_flush_and_close_send_a_held_head() -> None:
    transport, raw = coalescing()
    transport.write(HEAD)
    transport.flush()
    assert raw.writes == [HEAD]
    transport.flush()
    assert raw.writes == [HEAD]

    transport, raw = coalescing()
    transport.write(HEAD)
    transport.close()
    assert raw.writes == [HEAD] and raw.closed


def test_other_calls_reach_the_real_transport() -> None:
    transport, raw = coalescing()
    assert transport.is_closing() is False
    raw.closed = True
    assert transport.is_closing() is True


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(tmp_path)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def _exchange(port: int, request: bytes, until: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while until not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_bodiless_answer_is_not_held_back(server: ServiceProcess) -> None:
    # A HEAD answer has a head and no body write: it must still go out at once.
    reply = _exchange(server.port, b"HEAD /ready HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert reply.endswith(b"\r\n\r\n")


def test_keep_alive_answers_follow_each_other(server: ServiceProcess) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(request)
            data = b""
            while not data.endswith(b'{"status":"ok"}'):
                chunk = sock.recv(65536)
                assert chunk, "connection closed early"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ")
