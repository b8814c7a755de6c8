"""Request id, access log line and request metrics, as one raw ASGI middleware.

It wraps the whole application (error handling included), so every answer, a
500 too, gets an ``X-Request-ID`` header, one access line and one count. The
per-request work is kept small: a dict lookup for the route label, cached
metric children (or their tallies), and a single log call.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otpgate.domain.errors import RateLimited, StoreUnavailable, TooManyAttempts
from otpgate.domain.limits import LIMIT_MESSAGES
from otpgate.http.client_ip import ClientIpResolver
from otpgate.http.respond import RESPOND, Respond
from otpgate.observability import metrics
from otpgate.observability.fast_log_line import log_fields
from otpgate.observability.fast_tally import Counts, Observes, counter, histogram
from otpgate.observability.logs import log_record
from otpgate.observability.request_context import RequestInfo, current_request

access_log = logging.getLogger("otpgate.access")

OTHER_ROUTE = "other"
REQUEST_ID_HEADER = b"x-request-id"
# An incoming id is kept when it is short, visible ASCII without spaces; anything
# else is replaced, so a client cannot forge log lines or bloat them.
_VALID_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")

# Machine codes of the refusals counted as limit refusals (whatever their status:
# global_budget is a 503).
LIMIT_CODES = frozenset({RateLimited.code, TooManyAttempts.code, *LIMIT_MESSAGES})

# Probes and scrapes answer every few seconds: their successes are logged at DEBUG.
QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics"})


def new_request_id() -> str:
    return os.urandom(8).hex()


class ObservabilityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Iterable[str],
        client_ip: ClientIpResolver,
        access_log_enabled: bool = True,
        metrics_enabled: bool = True,
        direct_log: bool = True,
        tallied: bool = True,
        verify_route: str = "/api/v1/verify-otp",
    ) -> None:
        """``direct_log``: write the access line with ``log_fields``, else an ordinary record;
        ``tallied``: count into per-process tallies (``fast_tally``), else the metrics."""
        self.app = app
        routes = list(routes)
        self._routes = {path: path for path in routes if "{" not in path}
        # A route with a path parameter is labelled by its template, never by its path
        # (an id in a metric label would be one series per verification).
        self._templates = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
            for path in routes
            if "{" in path
        ]
        self._resolve_ip = client_ip.resolve
        self._log_enabled = access_log_enabled
        self._log_line = log_fields if direct_log else log_record
        self._metrics_enabled = metrics_enabled
        self._tallied = tallied
        self._verify_route = verify_route
        self._requests: dict[tuple[str, int], Counts] = {}
        self._durations: dict[str, Observes] = {}
        self._refusals: dict[str, Counts] = {}
        self._verifications = {
            o: counter(metrics.VERIFICATIONS.labels(o), tallied=tallied)
            for o in metrics.VERIFY_OUTCOMES
        }
        self._store_unavailable = counter(metrics.STORE_UNAVAILABLE, tallied=tallied)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        raw_id: bytes | None = None
        forwarded: bytes | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                raw_id = value
            elif name == b"x-forwarded-for":
                forwarded = value
        if raw_id is not None and _VALID_REQUEST_ID.fullmatch(raw_id):
            request_id = raw_id.decode("ascii")
            id_header = (REQUEST_ID_HEADER, raw_id)
        else:
            request_id = new_request_id()
            id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        info = RequestInfo(request_id)
        token = current_request.set(info)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        extensions: dict[str, Any] | None = scope.get("extensions")
        respond: Respond | None = extensions.get(RESPOND) if extensions else None
        if extensions is not None and respond is not None:
            # The server's one-call response (see fast_protocol), the same way.
            def respond_with_id(code: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
                nonlocal status
                status = code
                respond(code, [*headers, id_header], body)

            extensions[RESPOND] = respond_with_id

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if info.error_code is None:
                info.error_code = "internal_error"
            raise
        finally:
            current_request.reset(token)
            self._done(scope, info, status, time.perf_counter() - start, forwarded)

    def _done(
        self,
        scope: Scope,
        info: RequestInfo,
        status: int,
        elapsed: float,
        forwarded: bytes | None,
    ) -> None:
        path = scope["path"]
        route = self._routes.get(path) or self._template_of(path)
        if self._metrics_enabled:
            self._count(route, status, elapsed, info)
        if not self._log_enabled:
            return
        if status >= 500:
            level = logging.WARNING
        elif route in QUIET_ROUTES and status < 400:
            level = logging.DEBUG
        else:
            level = logging.INFO
        if not access_log.isEnabledFor(level):
            return
        client_ip = info.client_ip
        if client_ip is None:  # a route without the per-IP limit
            client = scope.get("client")
            client_ip = self._resolve_ip(
                client[0] if client else None,
                forwarded.decode("latin-1") if forwarded is not None else None,
            )
        extra: dict[str, Any] = {
            "request_id": info.request_id,
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "client_ip": client_ip,
        }
        if info.error_code is not None:
            extra["code"] = info.error_code
        if info.phone is not None:
            # An address, masked, keeps its "@" (``j***@example.com``); a number never has one.
            extra["email" if "@" in info.phone else "phone"] = info.phone
        if info.api_key_name is not None:
            extra["api_key_name"] = info.api_key_name
        if info.end_user_ip is not None:
            extra["end_user_ip"] = info.end_user_ip
        self._log_line(access_log, level, "request", extra)

    def _template_of(self, path: str) -> str:
        for pattern, template in self._templates:
            if pattern.match(path):
                return template
        return OTHER_ROUTE

    def _count(self, route: str, status: int, elapsed: float, info: RequestInfo) -> None:
        key = (route, status)
        requests = self._requests.get(key)
        if requests is None:
            requests = self._requests[key] = counter(
                metrics.HTTP_REQUESTS.labels(route, str(status)), tallied=self._tallied
            )
        requests.inc()
        duration = self._durations.get(route)
        if duration is None:
            duration = self._durations[route] = histogram(
                metrics.HTTP_DURATION.labels(route), tallied=self._tallied
            )
        duration.observe(elapsed)
        code = info.error_code
        if code is not None and code in LIMIT_CODES:
            refusal = self._refusals.get(code)
            if refusal is None:
                refusal = self._refusals[code] = counter(
                    metrics.LIMIT_REFUSALS.labels(code), tallied=self._tallied
                )
            refusal.inc()
        elif code == StoreUnavailable.code:
            self._store_unavailable.inc()
        if route == self._verify_route:
            outcome = _verify_outcome(status, info)
            if outcome is not None:
                self._verifications[outcome].inc()


def _verify_outcome(status: int, info: RequestInfo) -> str | None:
    """The verdict of a verify, or None when it never reached one (bad input, limits...)."""
    if status == 200:
        return "approved"
    if info.error_code == "too_many_attempts":
        return "max_attempts"
    if info.error_code == "invalid_code":
        return "wrong" if info.code_found else "no_code"
    return None
