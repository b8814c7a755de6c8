"""The API's browser view at ``/docs``: Swagger UI served from a Python package.

Nothing is loaded from a CDN, so the page works on a machine without internet
access, and no script is inline, so a strict Content-Security-Policy holds.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs/assets"

_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>otpgate API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="/docs/start.js"></script>
</body></html>"""

# Swagger UI sets styles from script, and draws its icons as data: URIs.
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def docs_routes(spec_url: str) -> list[BaseRoute]:
    start = f'SwaggerUIBundle({{url: "{spec_url}", dom_id: "#ui"}});\n'

    async def page(_: Request) -> Response:
        return HTMLResponse(_PAGE, headers={"content-security-policy": _CSP})

    async def start_script(_: Request) -> Response:
        return Response(start, media_type="text/javascript")

    return [
        Route("/docs", page, methods=["GET"]),
        Route("/docs/start.js", start_script, methods=["GET"]),
        Mount(ASSETS, StaticFiles(directory=str(swagger_ui_path))),
    ]
