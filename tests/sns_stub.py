"""A scriptable SNS endpoint on a free loopback port.

Unlike the emulator it can hold a Publish open until the test releases it, so
tests can observe a request that is genuinely in flight.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

_OK = """<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">
<PublishResult><MessageId>{id}</MessageId></PublishResult>
<ResponseMetadata><RequestId>{id}</RequestId></ResponseMetadata>
</PublishResponse>"""


class HeldSns:
    def __init__(self) -> None:
        self.received = threading.Event()
        self.release = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                stub.received.set()
                stub.release.wait(timeout=30)
                body = _OK.format(id=uuid.uuid4()).encode()
                self.send_response(200)
                self.send_header("content-type", "text/xml")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> HeldSns:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def held_sns() -> Iterator[HeldSns]:
    with HeldSns() as stub:
        yield stub
