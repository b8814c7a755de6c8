"""The Starlette application: routes, error mapping and lifecycle.

Handlers stay thin on purpose: rate-limit, parse, call the use case, shape the
answer. Anything a client can cause becomes a 4xx with a machine code; store and
provider failures become 503/502; nothing else escapes as a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from otpgate.domain.errors import OtpError, RateLimited
from otpgate.http.body import read_json_body
from otpgate.http.errors import (
    HTTP_CODES,
    HttpError,
    error_response,
    http_error_response,
    otp_error_response,
)
from otpgate.http.middleware import ObservabilityMiddleware
from otpgate.http.openapi import build_openapi, swagger_html
from otpgate.http.ops import ops_routes, serves_metrics_in_app
from otpgate.http.schemas import RequestOtpBody, verify_body_model
from otpgate.store.base import RequestWindow, WindowHit
from otpgate.wiring import Components

log = logging.getLogger("otpgate.http")

REQUEST_OK = "OTP requested successfully. Check your phone."
VERIFY_OK = "OTP verified successfully."

Handler = Callable[[Request], Awaitable[Response]]
RouteHandler = Callable[[Request, str, RequestWindow], Awaitable[tuple[Response, WindowHit | None]]]


def json_response(body: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def create_app(components: Components) -> ASGIApp:
    settings = components.settings
    service = components.service
    limiter = components.rate_limiter
    resolve_ip = components.client_ip.resolve
    max_body = settings.max_body_bytes
    verify_model = verify_body_model(settings.otp_length)
    openapi_doc = orjson.dumps(build_openapi(verify_model, metrics=serves_metrics_in_app(settings)))

    def limited(route: str, handle: RouteHandler) -> Handler:
        """Wrap a handler with the per-IP limit; its headers go on every answer."""

        async def endpoint(request: Request) -> Response:
            client = resolve_ip(
                request.client.host if request.client else None,
                request.headers.get("x-forwarded-for"),
            )
            window = limiter.window(route, client)
            try:
                response, hit = await handle(request, client, window)
            except HttpError as exc:
                # Rejected before any store step: count it on its own.
                hit = await limiter.count(window)
                if hit.over(window):
                    exc_429 = RateLimited(max(1, -(-hit.reset_after_ms // 1000)))
                    return otp_error_response(exc_429, limiter.headers(hit))
                return http_error_response(exc, limiter.headers(hit))
            except OtpError as exc:
                _log_refusal(route, exc)
                return otp_error_response(exc, limiter.headers(exc.window_hit))
            except ClientDisconnect:
                return Response(status_code=499)  # nobody is listening any more
            response.headers.update(limiter.headers(hit))
            return response

        return endpoint

    async def request_otp(
        request: Request, client: str, window: RequestWindow
    ) -> tuple[Response, WindowHit | None]:
        body = await read_json_body(request, RequestOtpBody, max_body)
        sent = await service.request_code(body.phoneNumber, client, window)
        log.info("otp sent", extra={"phone": sent.phone.masked(), "client_ip": client})
        payload = {
            "message": REQUEST_OK,
            "messageId": sent.message_id,
            "expiresIn": sent.expires_in,
        }
        return json_response(payload), sent.window_hit

    async def verify_otp(
        request: Request, client: str, window: RequestWindow
    ) -> tuple[Response, WindowHit | None]:
        body = await read_json_body(request, verify_model, max_body)
        verified = await service.verify_code(body.phoneNumber, body.otp, window)
        log.info("otp verified", extra={"phone": verified.phone.masked(), "client_ip": client})
        return json_response({"success": True, "message": VERIFY_OK}), verified.window_hit

    async def health(_: Request) -> Response:
        return json_response({"status": "ok"})

    async def openapi(_: Request) -> Response:
        return Response(openapi_doc, media_type="application/json")

    async def docs(_: Request) -> Response:
        return HTMLResponse(swagger_html("/openapi.json"))

    async def http_exception(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_body")
        # Keeps the Allow header of a 405, which RFC 9110 requires.
        return error_response(exc.status_code, code, HTTP_CODES[code][1], exc.headers)

    async def unexpected(_: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", HTTP_CODES["internal_error"][1])

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await components.close()
            log.info("stopped: store and SMS client closed")

    app = Starlette(
        routes=[
            Route("/api/v1/request-otp", limited("request-otp", request_otp), methods=["POST"]),
            Route("/api/v1/verify-otp", limited("verify-otp", verify_otp), methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
            *ops_routes(components),
        ],
        exception_handlers={HTTPException: http_exception, Exception: unexpected},
        lifespan=lifespan,
    )
    # Outermost, so that a 500 too gets its request id, access line and count.
    return ObservabilityMiddleware(
        app,
        routes=[route.path for route in app.routes if isinstance(route, Route)],
        client_ip=components.client_ip,
        access_log_enabled=settings.access_log,
        metrics_enabled=settings.metrics_enabled,
    )


# Dependency failures are worth an operator's attention; client errors are routine.
_OPERATOR_CODES = frozenset({"store_unavailable", "sms_provider_error", "sms_provider_unavailable"})


def _log_refusal(route: str, exc: OtpError) -> None:
    """Never a stack trace; a client error is already on its access line (with its code)."""
    level = logging.ERROR if exc.code in _OPERATOR_CODES else logging.DEBUG
    log.log(level, "refused", extra={"route": route, "code": exc.code})
