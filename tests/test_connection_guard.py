"""The connection guard on its own: uvicorn's protocol behind it, a fake socket in front."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from otpgate.runtime.connections import (
    TIMED_OUT,
    TOO_MANY,
    ConnectionLimits,
    Connections,
    Guard,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class Socket:
    """Enough of a TCP transport: what was written, and how it was closed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.eof_written = self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.eof_written, "written after the FIN"
        self.writes.append(bytes(data))

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 3000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def connect(connections: Connections) -> tuple[Guard, Socket, ServerState]:
    state = ServerState()
    config = Config(app=app, lifespan="off", log_config=None)
    inner = HttpToolsProtocol(config, state, {}, _loop=asyncio.get_running_loop())
    guard = Guard(inner, connections)
    sock = Socket()
    guard.connection_made(cast(asyncio.Transport, sock))
    return guard, sock, state


def started(**limits: Any) -> Connections:
    connections = Connections(ConnectionLimits(**limits))
    connections.start()
    return connections


async def test_a_drained_idle_connection_serves_its_next_request_then_closes() -> None:
    connections = started()
    guard, sock, state = connect(connections)
    guard.data_received(REQUEST)
    await asyncio.gather(*state.tasks)
    assert b"connection: close" not in sock.writes[-1]
    connections.drain()  # uvicorn would close it here, with the next request on its way
    assert not sock.eof_written and not sock.closed
    guard.data_received(REQUEST)
    await asyncio.gather(*state.tasks)
    assert sock.writes[-2].startswith(b"HTTP/1.1 200 OK")
    assert b"connection: close" in sock.writes[-2]
    assert sock.eof_written and not sock.closed  # lingering: reading until the client closes
    guard.data_received(b"GET / HTTP/1.1\r\n")  # dropped, unanswered: it was told to close
    assert guard.eof_received() is None  # the client's FIN: now the socket may close
    connections.stop()


@pytest.mark.parametrize(
    ("limit", "arrived"),
    [
        ("header_timeout", b"GET / HT"),
        ("body_timeout", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12"),
    ],
    ids=["headers", "body"],
)
async def test_a_late_request_is_answered_408_and_the_connection_lingers(
    limit: str, arrived: bytes
) -> None:
    connections = started(**{limit: 1})
    guard, sock, _ = connect(connections)
    guard.data_received(arrived)
    guard.check(time.monotonic() + 0.5, connections.limits)
    assert sock.writes == []
    guard.check(time.monotonic() + 1.5, connections.limits)
    assert sock.writes == [TIMED_OUT] and sock.eof_written and not sock.closed
    connections.stop()


async def test_a_connection_that_never_sent_a_byte_is_closed_without_an_answer() -> None:
    connections = started(header_timeout=1)
    guard, sock, _ = connect(connections)
    guard.check(time.monotonic() + 1.5, connections.limits)
    assert sock.writes == [] and sock.eof_written
    connections.stop()


async def test_a_connection_past_the_cap_is_answered_503_without_the_app() -> None:
    connections = started(max_connections=1)
    first, _, _ = connect(connections)
    second, sock, state = connect(connections)
    second.data_received(REQUEST)
    assert sock.writes == [TOO_MANY] and sock.eof_written
    assert not state.connections and not state.tasks  # uvicorn's protocol never saw it
    second.connection_lost(None)
    first.connection_lost(None)
    third, sock, state = connect(connections)
    third.data_received(REQUEST)  # a place is free again: served
    await asyncio.gather(*state.tasks)
    assert sock.writes[0].startswith(b"HTTP/1.1 200 OK")
    connections.stop()
