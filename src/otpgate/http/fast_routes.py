"""The hot routes' dispatch: by exact (method, path), in front of Starlette."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from otpgate.http.api import Handler
from otpgate.http.respond import RESPOND


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
