"""The operators' dashboard: ``/admin``, its script and its stylesheet.

The page is static and holds nothing: everything it shows comes from ``/admin/v1/``
with the key the operator pastes in (kept for the tab in sessionStorage), so serving
it needs no key. The files sit next to this module (package data) and are read once,
when the app is built. As with the widget, nothing is inline and nothing comes from
another origin, so the Content-Security-Policy allows this origin's script and
stylesheet and nothing else; no page may frame it.
"""

from __future__ import annotations

from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

PAGE_PATH = "/admin"
SCRIPT_PATH = "/admin/dashboard.js"
STYLE_PATH = "/admin/dashboard.css"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)

_NO_SNIFF = {"x-content-type-options": "nosniff"}


def _asset(name: str) -> bytes:
    return files(__name__).joinpath(name).read_bytes()


def dashboard_routes() -> list[BaseRoute]:
    page = _asset("index.html")
    script = _asset("dashboard.js")
    style = _asset("dashboard.css")
    page_headers = {
        **_NO_SNIFF,
        "content-security-policy": CONTENT_SECURITY_POLICY,
        "x-frame-options": "DENY",  # for browsers without frame-ancestors
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
    }
    asset_headers = {**_NO_SNIFF, "cache-control": "no-cache"}

    async def dashboard_page(_: Request) -> Response:
        return Response(page, headers=page_headers, media_type="text/html")

    async def dashboard_script(_: Request) -> Response:
        return Response(script, headers=asset_headers, media_type="text/javascript")

    async def dashboard_style(_: Request) -> Response:
        return Response(style, headers=asset_headers, media_type="text/css")

    return [
        Route(PAGE_PATH, dashboard_page, methods=["GET"]),
        Route(SCRIPT_PATH, dashboard_script, methods=["GET"]),
        Route(STYLE_PATH, dashboard_style, methods=["GET"]),
    ]
