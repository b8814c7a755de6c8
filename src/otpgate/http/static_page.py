"""A page with a script and a stylesheet of its own, served from the package.

The widget and the dashboard are both built so: no CDN, no build step, nothing inline,
so each page's Content-Security-Policy can allow only its own two files.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

NO_SNIFF = {"x-content-type-options": "nosniff"}
# The files change only with a release: revalidated, never stale.
ASSET_HEADERS = {**NO_SNIFF, "cache-control": "no-cache"}


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
