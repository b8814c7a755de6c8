"""The serving protocol: one write per small response, and nothing held back."""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.server import ServerState

from otpgate.cli import uvicorn_config
from otpgate.http.fast_protocol import CoalescingTransport, HttpProtocol
from otpgate.http.respond import RESPOND
from tests.conftest import ServiceFactory, make_settings
from tests.service_process import ServiceProcess, free_port

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


class FakeSocketTransport(RecordingTransport):
    """Enough of a TCP transport for the protocol to serve requests in-process."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 3000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


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
def server(tmp_path: Path, fast_path: bool) -> Iterator[ServiceProcess]:
    """``otpgate serve``: with this protocol, or (FAST_PATH=false) uvicorn's own."""
    proc = ServiceProcess(tmp_path, FAST_PATH=str(fast_path).lower())
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


async def test_hot_routes_answer_through_the_one_call_extension(
    make_service: ServiceFactory, fast_path: bool
) -> None:
    # What otpgate serve's protocol offers: the answer, request id included, arrives
    # in one call and no ASGI message is sent. On the stock path (no FastRoutes) the
    # extension goes unused and the same answer goes out as ASGI messages.
    svc = await make_service()
    calls: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []
    sent: list[Any] = []
    body = b'{"phoneNumber": "+12125550123", "otp": "000000"}'

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: object) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/verify-otp",
        "headers": [(b"content-type", b"application/json"), (b"x-request-id", b"abc-1")],
        "client": ("198.51.100.7", 5000),
        "extensions": {RESPOND: lambda *args: calls.append(args)},
    }
    await svc.app(scope, receive, send)
    if fast_path:
        assert sent == []
        [(status, headers, answer)] = calls
    else:
        assert calls == []
        start, whole = sent
        status, headers, answer = start["status"], start["headers"], whole["body"]
        assert whole.get("more_body", False) is False
    assert status == 400
    assert orjson.loads(answer)["code"] == "invalid_code"
    names = dict(headers)
    assert names[b"x-request-id"] == b"abc-1"
    assert names[b"content-length"] == str(len(answer)).encode()
    assert {b"x-ratelimit-limit", b"x-ratelimit-remaining", b"content-type"} <= set(names)


def _read_response(sock: socket.socket) -> tuple[bytes, dict[bytes, bytes], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the head"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}
    length = int(headers[b"content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the body"
        rest += chunk
    return status_line, headers, rest


def test_served_answer_is_complete_and_keeps_the_connection(server: ServiceProcess) -> None:
    body = b'{"phoneNumber": "+12125550123", "otp": "000000"}'
    request = (
        b"POST /api/v1/verify-otp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Request-ID: req-42\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for used in (1, 2):
            sock.sendall(request)
            status_line, headers, answer = _read_response(sock)
            assert status_line == b"HTTP/1.1 400 Bad Request"
            assert orjson.loads(answer)["code"] == "invalid_code"
            assert headers[b"x-request-id"] == b"req-42"
            assert headers[b"content-type"] == b"application/json"
            limit = int(headers[b"x-ratelimit-limit"])
            assert int(headers[b"x-ratelimit-remaining"]) == limit - used
            assert b"date" in headers
            assert b"connection" not in headers
    log = server.stop()
    assert '"request_id": "req-42"' in log or "request_id=req-42" in log
    assert "status=400" in log or '"status": 400' in log


def test_connection_close_is_honoured(server: ServiceProcess) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        status_line, headers, answer = _read_response(sock)
        assert status_line == b"HTTP/1.1 200 OK"
        assert headers[b"connection"] == b"close"
        assert answer == b'{"status":"ok"}'
        # Closed at once, not by the 5 s keep-alive timeout that would close it anyway.
        sock.settimeout(2)
        assert sock.recv(1) == b""


async def test_the_served_protocol_follows_fast_path(tmp_path: Path, fast_path: bool) -> None:
    """uvicorn as ``otpgate serve`` configures it: the one-call extension is offered
    only on the fast path; FAST_PATH=false leaves uvicorn's own protocol."""
    seen: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        seen.append(RESPOND in scope.get("extensions", {}))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    settings = make_settings(tmp_path, fast_path=fast_path)
    config = uvicorn_config(settings, "127.0.0.1", free_port())
    assert ("http" in config) == fast_path
    server = uvicorn.Server(uvicorn.Config(**{**config, "app": app, "lifespan": "off"}))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{config['port']}/")
        assert answer.status_code == 204
    finally:
        server.should_exit = True
        await serving
    assert seen == [fast_path]


async def test_a_finished_request_leaves_no_reference_cycle() -> None:
    # The one-call extension points back at its cycle; left in the scope, every
    # request became garbage only the collector could free, and its pauses were
    # the p99 under load. With the collector off, reference counting must free it.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        scope["extensions"][RESPOND](200, [(b"content-length", b"2")], b"ok")

    config = Config(app=app, lifespan="off", log_config=None)
    state = ServerState()
    protocol = HttpProtocol(config, state, {}, _loop=asyncio.get_running_loop())
    transport = FakeSocketTransport()
    protocol.connection_made(cast(asyncio.Transport, transport))
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    gc.disable()
    try:
        protocol.data_received(request)
        first = weakref.ref(protocol.cycle)
        await asyncio.gather(*state.tasks)
        protocol.data_received(request)  # the next request replaces the protocol's cycle
        await asyncio.gather(*state.tasks)
        assert first() is None
    finally:
        gc.enable()
    assert [w.startswith(b"HTTP/1.1 200 OK") for w in transport.writes] == [True, True]
