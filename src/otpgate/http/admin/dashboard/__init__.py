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

from starlette.routing import BaseRoute

from otpgate.http.static_page import NO_SNIFF, page_routes

PAGE_PATH = "/admin"
SCRIPT_PATH = "/admin/dashboard.js"
STYLE_PATH = "/admin/dashboard.css"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _asset(name: str) -> bytes:
    return files(__name__).joinpath(name).read_bytes()


def dashboard_routes() -> list[BaseRoute]:
    page_headers = {
        **NO_SNIFF,
        "content-security-policy": CONTENT_SECURITY_POLICY,
        "x-frame-options": "DENY",  # for browsers without frame-ancestors
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
    }
    return page_routes(
        (PAGE_PATH, SCRIPT_PATH, STYLE_PATH),
        _asset("index.html"),
        page_headers,
        _asset("dashboard.js"),
        _asset("dashboard.css"),
    )
