"""A page with a script and a stylesheet of its own, served from the package.

The widget and the dashboard are both built so: no CDN, no build step, nothing inline,
so each page's Content-Security-Policy can allow only its own two files. The icon
every page links to (and that browsers ask for at ``/favicon.ico`` anyway) is here too.
"""

from __future__ import annotations

from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

NO_SNIFF = {"x-content-type-options": "nosniff"}
# The files change only with a release: revalidated, never stale.
ASSET_HEADERS = {**NO_SNIFF, "cache-control": "no-cache"}
ICON_PATHS = ("/favicon.svg", "/favicon.ico")


def page_routes(
    paths: tuple[str, str, str],
    page: bytes,
    page_headers: dict[str, str],
    script: bytes,
    style: bytes,
) -> list[BaseRoute]:
    """GET routes for the page, its script and its stylesheet, at ``paths`` in that
    order; the page with ``page_headers`` (its CSP among them)."""
    page_path, script_path, style_path = paths

    async def serve_page(_: Request) -> Response:
        return Response(page, headers=page_headers, media_type="text/html")

    async def serve_script(_: Request) -> Response:
        return Response(script, headers=ASSET_HEADERS, media_type="text/javascript")

    async def serve_style(_: Request) -> Response:
        return Response(style, headers=ASSET_HEADERS, media_type="text/css")

    return [
        Route(page_path, serve_page, methods=["GET"]),
        Route(script_path, serve_script, methods=["GET"]),
        Route(style_path, serve_style, methods=["GET"]),
    ]


def icon_routes() -> list[BaseRoute]:
    """The service's icon, an SVG, at ``/favicon.svg`` (which the pages link to) and at
    ``/favicon.ico`` (which browsers ask for by themselves; every current one reads an
    SVG served there)."""
    icon = files("otpgate.http").joinpath("favicon.svg").read_bytes()

    async def serve_icon(_: Request) -> Response:
        return Response(icon, headers=ASSET_HEADERS, media_type="image/svg+xml")

    return [Route(path, serve_icon, methods=["GET"]) for path in ICON_PATHS]
