"""The hot routes' dispatch: by exact (method, path), in front of Starlette."""

from __future__ import annotations

import inspect

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from otpgate.http.api import Handler
from otpgate.http.respond import RESPOND


def unavailable() -> str | None:
    """Why FastRoutes cannot serve with the installed Starlette, or None when it can.

    The handlers' answers are taken apart instead of being sent as ASGI messages:
    this checks, on a throwaway Response, that status, body and the raw header list
    (headers added later included, as the API routes add theirs) are where they are
    read, and that a Request is still made from (scope, receive).
    """
    if list(inspect.signature(Request).parameters)[:2] != ["scope", "receive"]:
        return "Request no longer takes (scope, receive)"
    response = Response(b"{}", status_code=201, media_type="application/json")
    response.headers["x-check"] = "1"
    raw = getattr(response, "raw_headers", None)
    if not isinstance(raw, list):
        return "Response.raw_headers is not a list"
    headers = dict(raw)
    if headers.get(b"content-length") != b"2" or b"content-type" not in headers:
        return "Response.raw_headers lacks content-length or content-type"
    if headers.get(b"x-check") != b"1":
        return "headers set on a Response do not reach its raw_headers"
    if response.status_code != 201 or response.body != b"{}":
        return "Response.status_code or Response.body is not what was given"
    return None


class FastRoutes:
    """Exact (method, path) dispatch of the hot routes, in front of Starlette.

    These routes cannot fail (the API routes catch every error themselves), so
    they need none of Starlette's per-request routing and error middleware;
    skipping it cut a verify's CPU by about 30% in-process. Under ``otpgate serve``
    their answer is written with the server's one-call ``RESPOND``. Everything
    else (other methods, docs, probes, 404/405) goes through Starlette as usual.
    """

    def __init__(self, routes: dict[tuple[str, str], Handler], fallback: ASGIApp) -> None:
        self._routes = routes
        self.app = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self._routes.get((scope["method"], scope["path"]))
            if handler is not None:
                response = await handler(Request(scope, receive))
                extensions = scope.get("extensions")
                respond = extensions.get(RESPOND) if extensions else None
                if respond is not None:
                    respond(response.status_code, response.raw_headers, response.body)
                else:
                    await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
