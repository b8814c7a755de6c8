"""uvicorn's httptools protocol, sending each small response in one write.

uvicorn writes a response's head as soon as the app starts it and the body in a
second write. On loopback and behind a proxy that is two send() calls and two
TCP segments per answer; for our tiny JSON replies the second syscall was about
a tenth of a verify's CPU. Here the head is held until the first body write (or
the end of the response, or a close) and leaves with it.

It also offers the hot routes a shortcut, the scope extension ``RESPOND``: one
call with status, headers and the whole body writes the response, instead of two
ASGI messages through uvicorn's general send (header checks, chunking, state
machine): 4% fewer instructions per verify. The headers given must already be
valid (the app builds them from fixed names and checked values). Nothing else
changes: parsing, keep-alive, pipelining and shutdown stay uvicorn's. The
deadlines, the cap per worker and the drain at shutdown are not this protocol's:
``otpgate.runtime.connections`` wraps it as it wraps uvicorn's own, so
``FAST_PATH=false`` behaves the same.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from functools import partial
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from otpgate.http.respond import RESPOND, Respond
from otpgate.runtime.fast_path import unmentioned

_CONTINUE = b"HTTP/1.1 100 "
_HEAD_START = b"HTTP/1."
_HEAD_END = b"\r\n\r\n"


# What HttpProtocol and _respond use of uvicorn beyond its ASGI interface.
_HOOKS = ("connection_made", "on_headers_complete", "on_response_complete")
_PROTOCOL_FIELDS = ("transport", "cycle", "scope")
_CYCLE_FIELDS = (
    "scope",
    "transport",
    "default_headers",
    "keep_alive",
    "disconnected",
    "response_started",
    "response_complete",
    "message_event",
    "on_response",
)


def unavailable() -> str | None:
    """Why this protocol cannot run on the installed uvicorn, or None when it can.

    Checks, without making a server or a connection, what the class and ``_respond``
    use of uvicorn's httptools protocol: the status lines, the hooks overridden,
    the fields of the protocol and of its request cycle, and the ``http`` option
    that installs the class. (Importing this module already checked the names.)
    """
    import uvicorn
    from uvicorn.protocols.http import httptools_impl

    lines = getattr(httptools_impl, "STATUS_LINE", None)
    if not isinstance(lines, Mapping) or lines.get(200) != b"HTTP/1.1 200 OK\r\n":
        return "STATUS_LINE is not the status lines by code"
    for hook in _HOOKS:
        if not callable(getattr(HttpToolsProtocol, hook, None)):
            return f"HttpToolsProtocol.{hook} is gone"
    if list(inspect.signature(HttpToolsProtocol.connection_made).parameters) != [
        "self",
        "transport",
    ]:
        return "HttpToolsProtocol.connection_made no longer takes (self, transport)"
    missing = unmentioned(HttpToolsProtocol.__init__, _PROTOCOL_FIELDS)
    if missing:
        return f"HttpToolsProtocol no longer sets {', '.join(missing)}"
    missing = unmentioned(RequestResponseCycle.__init__, _CYCLE_FIELDS)
    if missing:
        return f"RequestResponseCycle no longer sets {', '.join(missing)}"
    if "http" not in inspect.signature(uvicorn.Config).parameters:
        return "uvicorn.Config takes no http option"
    return None


class CoalescingTransport:
    """A transport proxy that holds a response head until the bytes after it."""

    __slots__ = ("_head", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif (
            isinstance(data, bytes)
            and data.endswith(_HEAD_END)
            and data.startswith(_HEAD_START)
            and not data.startswith(_CONTINUE)
        ):
            self._head = data
        else:
            self._transport.write(data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """``otpgate serve``'s HTTP/1.1 protocol (pass as uvicorn's ``http``)."""

    # Same narrowed signature (and ignore) as uvicorn's own override.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = cast(asyncio.Transport, CoalescingTransport(self.transport))

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # Not after an upgrade request, which makes no cycle of its own.
        if cycle is not None and cycle.scope is self.scope:
            extensions = cast(dict[str, Any], self.scope.setdefault("extensions", {}))
            respond: Respond = partial(_respond, cycle)
            extensions[RESPOND] = respond

    def on_response_complete(self) -> None:
        cast(CoalescingTransport, self.transport).flush()
        cycle = self.cycle
        if cycle is not None:
            # The extension refers back to the cycle, which refers to the scope: a
            # reference cycle per request, left for the collector. Under load those
            # piled up in its middle generation and every collection of it paused
            # the worker for milliseconds. Breaking it here frees them at once.
            extensions = cycle.scope.get("extensions")
            if extensions:
                extensions.pop(RESPOND, None)
        super().on_response_complete()


def _respond(
    cycle: RequestResponseCycle, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """What uvicorn's send does for a start and a final body message, in one write.

    ``headers`` must carry the content-length, as Starlette's ``Response`` sets it.
    """
    if cycle.response_started:
        raise RuntimeError("the response has already started")
    cycle.response_started = True
    if cycle.disconnected:
        return
    content = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        content += (name, b": ", value, b"\r\n")
    for name, value in headers:
        content += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", body)
    cycle.transport.write(b"".join(content))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
