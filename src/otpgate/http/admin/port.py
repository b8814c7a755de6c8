"""ADMIN_PORT: the operators' routes on a listening socket of their own.

``otpgate serve`` gives each worker a second socket, on ADMIN_PORT, beside its API
socket: one process, one event loop, one store connection. Which socket a
connection came in on is the local port the server reports in ``scope["server"]``
(read from the socket by the kernel, so a client cannot choose it). A request to
ADMIN_PORT reaches the admin routes and nothing else; any other request reaches
the API and never an admin route, so a firewall or a load balancer in front of
PORT keeps the admin side out of reach by not forwarding ADMIN_PORT at all.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class AdminPortSplit:
    def __init__(self, main: ASGIApp, admin: ASGIApp, admin_port: int) -> None:
        self._main = main
        self._admin = admin
        self._admin_port = admin_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Lifespan events, and anything without a local port (a Unix socket), go to the API.
        server = scope.get("server") if scope["type"] == "http" else None
        if server is not None and server[1] == self._admin_port:
            await self._admin(scope, receive, send)
        else:
            await self._main(scope, receive, send)
