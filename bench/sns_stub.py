"""A fast stand-in for Amazon SNS: answers the Query-API ``Publish`` at once.

moto manages only ~500 publishes/s and would hide both services behind it, so
the benchmark uses this instead: one process, uvloop + httptools, keep-alive,
no signature check. It remembers the last code sent to each number so the flow
driver can read it back (``GET /codes/<E.164>``), and counts publishes
(``GET /stats``) so a sanity run can check that each 200 really sent an SMS.

Run: ``python -m bench.sns_stub --port 5055`` (listens on 127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import signal
from typing import cast
from urllib.parse import unquote_to_bytes

import httptools
import orjson

# Each service words its SMS its own way; the code is the first run of digits long
# enough not to be a count of minutes.
_CODE = re.compile(rb"(?<![0-9])[0-9]{4,10}(?![0-9])")

# Bounds memory when a long run publishes to millions of fresh numbers.
MAX_REMEMBERED = 1_000_000

_PUBLISH_XML = (
    b'<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
    b"<PublishResult><MessageId>%s</MessageId></PublishResult>"
    b"<ResponseMetadata><RequestId>0</RequestId></ResponseMetadata>"
    b"</PublishResponse>"
)
_ERROR_XML = (
    '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
    "<Error><Type>Sender</Type><Code>InvalidParameter</Code>"
    "<Message>{msg}</Message></Error><RequestId>0</RequestId></ErrorResponse>"
)


class StubState:
    """What the stub remembers across connections."""

    def __init__(self) -> None:
        self.publishes = 0
        self.codes: dict[bytes, bytes] = {}
        # Message ids only need to be unique and look like SNS's UUIDs.
        salt = os.urandom(6).hex()
        self._id_prefix = f"{salt[:8]}-{salt[8:]}-4000-8000-"

    def next_message_id(self) -> bytes:
        self.publishes += 1
        return f"{self._id_prefix}{self.publishes:012x}".encode()

    def remember(self, phone: bytes, message: bytes) -> None:
        """Keep the code: the first run of 4-10 digits of the (form-encoded) text."""
        if len(self.codes) >= MAX_REMEMBERED:
            # Forget the older half (dicts keep insertion order), never a code just sent.
            for old in list(itertools.islice(self.codes, MAX_REMEMBERED // 2)):
                del self.codes[old]
        found = _CODE.search(unquote_to_bytes(message.replace(b"+", b" ")))
        if found:
            self.codes[phone] = found.group()


def _form_value(body: bytes, name: bytes) -> bytes | None:
    """One raw (still percent-encoded) field of a form body, without parsing all of it."""
    start = body.find(name + b"=")
    while start > 0 and body[start - 1 : start] != b"&":
        start = body.find(name + b"=", start + 1)
    if start < 0:
        return None
    start += len(name) + 1
    end = body.find(b"&", start)
    return body[start:] if end < 0 else body[start:end]


def _response(status: bytes, content_type: bytes, payload: bytes, keep_alive: bool) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\nContent-Type: ",
            content_type,
            b"\r\nContent-Length: ",
            str(len(payload)).encode(),
            b"\r\nConnection: keep-alive\r\n\r\n"
            if keep_alive
            else b"\r\nConnection: close\r\n\r\n",
            payload,
        )
    )


class StubProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection; requests are answered in order as they complete."""

    def __init__(self, state: StubState) -> None:
        self._state = state
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    # httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"expect" and value.lower() == b"100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._transport is None:
            return
        keep_alive = self._parser.should_keep_alive()
        method = self._parser.get_method()
        if method == b"POST":
            reply = self._publish(b"".join(self._body), keep_alive)
        else:
            reply = self._get(self._url, keep_alive)
        self._transport.write(reply)
        if not keep_alive:
            self._transport.close()

    # handlers --------------------------------------------------------------------------
    def _publish(self, body: bytes, keep_alive: bool) -> bytes:
        if _form_value(body, b"Action") != b"Publish":
            payload = _ERROR_XML.format(msg="only Publish is implemented").encode()
            return _response(b"400 Bad Request", b"text/xml", payload, keep_alive)
        phone = _form_value(body, b"PhoneNumber")
        message = _form_value(body, b"Message")
        if phone and message:
            self._state.remember(phone.replace(b"%2B", b"+"), message)
        payload = _PUBLISH_XML % self._state.next_message_id()
        return _response(b"200 OK", b"text/xml", payload, keep_alive)

    def _get(self, url: bytes, keep_alive: bool) -> bytes:
        path = unquote_to_bytes(url.split(b"?", 1)[0])
        if path.startswith(b"/codes/"):
            code = self._state.codes.get(path[len(b"/codes/") :])
            if code is None:
                return _response(b"404 Not Found", b"text/plain", b"no code", keep_alive)
            return _response(b"200 OK", b"text/plain", code, keep_alive)
        if path == b"/stats":
            stats = {"publishes": self._state.publishes, "remembered": len(self._state.codes)}
            return _response(b"200 OK", b"application/json", orjson.dumps(stats), keep_alive)
        return _response(b"200 OK", b"text/plain", b"sns stub", keep_alive)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    state = StubState()
    server = await loop.create_server(
        lambda: StubProtocol(state), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fast local SNS Publish stub.")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
