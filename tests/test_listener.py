"""A listening socket stops taking connections before it closes, keeping its queue."""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Iterator

import pytest

from otpgate.runtime import listener


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def test_queued_connections_stay_and_new_ones_are_not_taken(listening: socket.socket) -> None:
    address = listening.getsockname()
    early = [socket.create_connection(address, timeout=2) for _ in range(2)]
    assert listener.queued(listening) == 2

    assert listener.stop_new_connections(listening) is None
    # A new connection is not taken: its SYN is dropped, so the connect waits...
    late = socket.socket()
    late.settimeout(0.3)
    with pytest.raises(TimeoutError):
        late.connect(address)
    late.close()
    assert listener.queued(listening) == 2

    # ...while the queued ones are still there to be accepted and answered.
    for client in early:
        conn, _ = listening.accept()
        with conn:
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
        client.close()
    assert listener.queued(listening) == 0


def test_a_connect_begun_after_the_stop_is_refused_once_the_socket_closes(
    listening: socket.socket,
) -> None:
    """Without the stop it would be queued, then reset by the close."""
    address = listening.getsockname()
    assert listener.stop_new_connections(listening) is None
    late = socket.socket()
    late.setblocking(False)
    try:
        assert late.connect_ex(address) == errno.EINPROGRESS
        # The SYN goes unanswered (the kernel will retry it): not connected.
        assert select.select([], [late], [], 0.2)[1] == []
        listening.close()
        # The retried SYN finds no socket: refused.
        assert select.select([], [late], [], 5)[1] == [late]
        assert late.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    finally:
        late.close()
