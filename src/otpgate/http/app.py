"""The ASGI application: the API routes, the operator routes and the lifecycle.

The two API routes (``http/api.py``) are dispatched by exact path before
Starlette (``http/fast_routes.py``); everything else (docs, the widget, probes,
the token keys, 404/405) is a plain Starlette app. With that fast path off,
Starlette routes them too. The operators' routes (``/admin/v1/`` and the ``/admin``
dashboard, while ADMIN_API_KEYS is set) join that app, or with ADMIN_PORT form an
app of their own that only that port reaches (``http/admin/port.py``). The
observability middleware wraps it all, so every answer is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from otpgate.components import Components
from otpgate.http.admin.api import AdminApi
from otpgate.http.admin.dashboard import dashboard_routes
from otpgate.http.admin.port import AdminPortSplit
from otpgate.http.api import OtpApi, json_response
from otpgate.http.client_ip import ClientIpResolver
from otpgate.http.docs import docs_routes
from otpgate.http.errors import HTTP_CODES, error_response
from otpgate.http.factors import FactorApi
from otpgate.http.fast_routes import FastRoutes
from otpgate.http.jwks import jwks_route
from otpgate.http.middleware import ObservabilityMiddleware
from otpgate.http.openapi import build_openapi
from otpgate.http.ops import ops_routes
from otpgate.http.schemas import verify_body_model
from otpgate.http.static_page import icon_routes
from otpgate.http.twilio_factors import TwilioFactorApi
from otpgate.http.twilio_verify import TwilioVerifyApi
from otpgate.http.widget import widget_routes
from otpgate.observability import fast_tally
from otpgate.runtime import fast_path

log = logging.getLogger("otpgate.http")


def create_app(components: Components) -> ASGIApp:
    config = components.http
    # Each fast path, or its stock equivalent (see otpgate/runtime/fast_path.py).
    dispatch_first = fast_path.enabled(fast_path.ROUTES, config.fast_path)
    direct_log = config.access_log and fast_path.enabled(fast_path.ACCESS_LINE, config.fast_path)
    tallied = config.metrics_enabled and fast_path.enabled(
        fast_path.METRIC_TALLIES, config.fast_path
    )
    client_ip = ClientIpResolver(config.trusted_proxies, config.ipv6_prefix_length)
    otp_api = OtpApi(components, client_ip)
    api = otp_api.routes()
    factor_routes = FactorApi(components, otp_api).starlette_routes()
    # Off (no routes, so 404) while VERIFY_V2_* is unset.
    totp_v2 = TwilioFactorApi(components.factors, components.rate_limiter, components.clock)
    verify_v2 = TwilioVerifyApi(components, client_ip).routes(totp_v2)
    verify_model = verify_body_model(config.otp_length)
    openapi_doc = orjson.dumps(
        build_openapi(
            verify_model,
            metrics=config.metrics_on_api_port,
            auth_required=components.api_auth.required,
        )
    )

    async def health(_: Request) -> Response:
        return json_response({"status": "ok"})

    async def openapi(_: Request) -> Response:
        return Response(openapi_doc, media_type="application/json")

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
        flusher = asyncio.create_task(fast_tally.flush_periodically()) if tallied else None
        if components.relay is not None:
            components.relay.start()
        await components.service.start()  # voids what a stopped process left charged
        try:
            yield
        finally:
            if flusher is not None:
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
                fast_tally.flush_all()  # the last requests' counts, before the files close
            await components.close()
            log.info("stopped: store and SMS client closed")

    admin: list[BaseRoute] = AdminApi(components).routes()
    if admin:
        admin += dashboard_routes()
    # With ADMIN_PORT, the admin routes are an app of their own, which only that port reaches.
    apart, on_main = (admin, []) if config.admin.port is not None else ([], admin)
    app = Starlette(
        routes=[
            *(Route(path, handler, methods=["POST"]) for path, handler in api.items()),
            *(
                Route(path, handler, methods=[method])
                for method, path, handler in otp_api.verification_routes()
            ),
            *(Route(path, handler, methods=[method]) for method, path, handler in verify_v2),
            *factor_routes,
            Route("/health", health, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            jwks_route(components.token_keys),
            *docs_routes("/openapi.json"),
            *widget_routes(
                config.widget_allowed_origins, config.otp_length, config.allowed_countries
            ),
            *ops_routes(components, flush_tallies=tallied),
            *icon_routes(),
            *on_main,
        ],
        exception_handlers={HTTPException: http_exception, Exception: unexpected},
        lifespan=lifespan,
    )
    served: ASGIApp = app
    if dispatch_first:
        fast = {("POST", path): handler for path, handler in api.items()}
        fast["GET", "/health"] = health
        served = FastRoutes(fast, app)
    if apart and config.admin.port is not None:
        admin_app = Starlette(
            # /health too, so that a load balancer in front of ADMIN_PORT can check it.
            routes=[*apart, *icon_routes(), Route("/health", health, methods=["GET"])],
            exception_handlers={HTTPException: http_exception, Exception: unexpected},
        )
        served = AdminPortSplit(served, admin_app, config.admin.port)
    # Outermost, so that a 500 too gets its request id, access line and count.
    return ObservabilityMiddleware(
        served,
        routes=[route.path for route in [*app.routes, *apart] if isinstance(route, Route)],
        client_ip=client_ip,
        access_log_enabled=config.access_log,
        metrics_enabled=config.metrics_enabled,
        direct_log=direct_log,
        tallied=tallied,
    )
