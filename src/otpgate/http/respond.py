"""The one-call response extension that ``otpgate serve``'s protocol offers the app.

``scope["extensions"][RESPOND](status, headers, body)`` writes a whole response
at once (see ``fast_protocol``). It is named here, apart from the protocol,
because the protocol imports uvicorn's internals and the app only needs the name:
the app must still import when those internals change.
"""

from __future__ import annotations

from collections.abc import Callable

RESPOND = "otpgate.respond"
Respond = Callable[[int, list[tuple[bytes, bytes]], bytes], None]
