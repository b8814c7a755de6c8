"""The drop-in verification widget: ``/widget``, its script and its stylesheet.

The three files sit next to this module (package data) and are read once, when the
app is built. The page carries its configuration (the origins that may receive a
token, the code length) as JSON in an HTML attribute, escaped, so no script is
inline and the Content-Security-Policy allows scripts and styles from this origin
only. ``frame-ancestors`` names the same origins that may receive the token, so only
those pages can frame it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from importlib.resources import files

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

PAGE_PATH = "/widget"
SCRIPT_PATH = "/widget/widget.js"
STYLE_PATH = "/widget/widget.css"
# Where the page's markup takes its configuration.
CONFIG_MARKER = "__OTPGATE_CONFIG__"

_NO_SNIFF = {"x-content-type-options": "nosniff"}


def content_security_policy(allowed_origins: Sequence[str]) -> str:
    ancestors = " ".join(allowed_origins) if allowed_origins else "'none'"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'none'; base-uri 'none'; "
        f"frame-ancestors {ancestors}"
    )


def _asset(name: str) -> str:
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def page_html(allowed_origins: Sequence[str], otp_length: int) -> str:
    config = orjson.dumps({"allowedOrigins": list(allowed_origins), "otpLength": otp_length})
    markup = _asset("index.html")
    if markup.count(CONFIG_MARKER) != 1:
        raise RuntimeError(f"widget/index.html must hold {CONFIG_MARKER} exactly once")
    return markup.replace(CONFIG_MARKER, html.escape(config.decode(), quote=True))


def widget_routes(allowed_origins: Sequence[str], otp_length: int) -> list[BaseRoute]:
    """``allowed_origins`` are WIDGET_ALLOWED_ORIGINS, already in a browser's origin form."""
    page = page_html(allowed_origins, otp_length).encode()
    page_headers = {
        **_NO_SNIFF,
        "content-security-policy": content_security_policy(allowed_origins),
        "referrer-policy": "no-referrer",
        # The page holds the configuration, which a restart may change.
        "cache-control": "no-store",
    }
    if not allowed_origins:
        page_headers["x-frame-options"] = "DENY"  # for browsers without frame-ancestors
    script = _asset("widget.js").encode()
    style = _asset("widget.css").encode()
    asset_headers = {**_NO_SNIFF, "cache-control": "no-cache"}

    async def widget_page(_: Request) -> Response:
        return Response(page, headers=page_headers, media_type="text/html")

    async def widget_script(_: Request) -> Response:
        return Response(script, headers=asset_headers, media_type="text/javascript")

    async def widget_style(_: Request) -> Response:
        return Response(style, headers=asset_headers, media_type="text/css")

    return [
        Route(PAGE_PATH, widget_page, methods=["GET"]),
        Route(SCRIPT_PATH, widget_script, methods=["GET"]),
        Route(STYLE_PATH, widget_style, methods=["GET"]),
    ]
