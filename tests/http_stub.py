"""A scriptable HTTP server on a free loopback port, for driving real clients into failures.

Each test gives it a ``respond`` function that sees the parsed request and returns a
``Reply`` (status, body, headers), ``HANG`` to hold the connection open without
answering until the server stops, ``DROP`` to close the connection without
answering, or ``RESET`` to reset it. Every request is recorded, so a test can count
attempts and read what the client sent. It also answers CONNECT, so it can stand in
for an HTTP proxy.

Its port is bound when it is made but listened on only from ``start()``: until
then connections to ``url`` are refused, as by a provider that is down, and the
same address comes up when the test starts it.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int] = ("", 0)  # the client's address and port

    @property
    def form(self) -> dict[str, str]:
        """The body as a urlencoded form (the AWS Query protocol), one value per key."""
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # close the connection after answering, without saying so


HANG = object()  # respond() returns this to never answer the request
DROP = object()  # respond() returns this to close the connection without an answer
RESET = object()  # respond() returns this to reset the connection (RST) without an answer


# Answers in the AWS Query protocol, as SNS sends them.
def aws_error(status: int, code: str, message: str = "") -> Reply:
    body = (
        '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>stub-request</RequestId></ErrorResponse>"
    )
    return Reply(status, body.encode(), {"content-type": "text/xml"})


def publish_ok(message_id: str | None = "stub-message-1") -> Reply:
    result = f"<MessageId>{message_id}</MessageId>" if message_id else ""
    body = (
        '<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
        f"<PublishResult>{result}</PublishResult>"
        "<ResponseMetadata><RequestId>stub-request</RequestId></ResponseMetadata>"
        "</PublishResponse>"
    )
    return Reply(200, body.encode(), {"content-type": "text/xml"})


Responder = Callable[[Received], Any]


class StubServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        """With ``tls``, the server speaks HTTPS (a server-side context with its certificate)."""
        self.received: list[Received] = []
        self.respond: Responder = lambda _: Reply()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._closed = threading.Condition(self._lock)
        self._closed_count = 0
        self._opened_count = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = Received(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                    peer=self.client_address[:2],
                )
                with stub._lock:
                    stub.received.append(request)
                reply = stub.respond(request)
                if reply is HANG:
                    stub._release.wait()
                    self.close_connection = True
                    return
                if reply is DROP:
                    self.close_connection = True
                    return
                if reply is RESET:
                    # Linger 0: closing sends RST, after the client's request was read.
                    linger = struct.pack("ii", 1, 0)
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    self.connection.close()
                    self.close_connection = True
                    return
                assert isinstance(reply, Reply)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
                if reply.close:
                    self.close_connection = True

            do_CONNECT = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                return None

        class Server(ThreadingHTTPServer):
            def get_request(self) -> tuple[Any, Any]:
                connection, address = super().get_request()
                with stub._lock:
                    stub._opened_count += 1
                if tls is not None:
                    # A failed handshake raises OSError here: the server drops the connection.
                    connection.settimeout(5)
                    connection = tls.wrap_socket(connection, server_side=True)
                    connection.settimeout(None)
                return connection, address

            def shutdown_request(self, request: Any) -> None:
                super().shutdown_request(request)
                with stub._closed:
                    stub._closed_count += 1
                    stub._closed.notify_all()

        # Bound now, listening from start(): connections before that are refused.
        self._server = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
        try:
            self._server.server_bind()
        except OSError:
            self._server.server_close()
            raise
        self._scheme = "http" if tls is None else "https"
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host}:{port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.received)

    @property
    def connections(self) -> int:
        """How many connections clients have opened so far (TLS handshake or not)."""
        with self._lock:
            return self._opened_count

    def wait_closed(self, count: int, timeout: float = 10) -> None:
        """Block until the server has closed ``count`` connections in all."""
        with self._closed:
            if not self._closed.wait_for(lambda: self._closed_count >= count, timeout):
                raise TimeoutError(f"{self._closed_count} of {count} connections closed")

    @property
    def started(self) -> bool:
        """Whether start() has been called (the port listens from then on)."""
        return self._thread.ident is not None

    def start(self) -> None:
        self._server.server_activate()
        self._thread.start()

    def stop(self) -> None:
        self._release.set()
        if not self.started:  # nothing serves, so nothing to wait for
            self._server.server_close()
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def stub_server() -> Iterator[StubServer]:
    server = StubServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL where nothing listens: the port is bound but never accepts."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        sock.close()


@pytest.fixture
def unanswered_url() -> Iterator[str]:
    """A loopback URL whose connections never open: its accept queue is kept full.

    With a backlog of 0 the kernel queues one connection (held here) and drops
    every later SYN, so a client's connect times out, just as against a host
    that does not answer.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        filler.close()
        server.close()
