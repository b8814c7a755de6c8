"""The drop-in verification widget: ``/widget``, its script and its stylesheet.

The three files sit next to this module (package data) and are read once, when the
app is built. The page carries its configuration (the origins that may receive a
token, the code length, the countries its number field offers) as JSON in an HTML
attribute, escaped, so no script is inline and the Content-Security-Policy allows
scripts and styles from this origin only. ``frame-ancestors`` names the same origins
that may receive the token, so only those pages can frame it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from importlib.resources import files

import orjson
from starlette.routing import BaseRoute

from otpgate.domain.phone import dialling
from otpgate.http.static_page import NO_SNIFF, page_routes

PAGE_PATH = "/widget"
SCRIPT_PATH = "/widget/widget.js"
STYLE_PATH = "/widget/widget.css"
# Where the page's markup takes its configuration.
CONFIG_MARKER = "__OTPGATE_CONFIG__"


def content_security_policy(allowed_origins: Sequence[str]) -> str:
    ancestors = " ".join(allowed_origins) if allowed_origins else "'none'"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'none'; base-uri 'none'; "
        f"frame-ancestors {ancestors}"
    )


def _asset(name: str) -> str:
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def country_choices(allowed_countries: Sequence[str] | None) -> list[dict[str, object]]:
    """The number field's countries: ALLOWED_COUNTRIES in its order, or every country
    libphonenumber knows. The page names them in the reader's language itself."""
    return [
        {"region": d.region, "callingCode": d.calling_code, "nationalPrefix": d.national_prefix}
        for d in dialling(allowed_countries)
    ]


def page_html(
    allowed_origins: Sequence[str],
    otp_length: int,
    allowed_countries: Sequence[str] | None = None,
) -> str:
    config = orjson.dumps(
        {
            "allowedOrigins": list(allowed_origins),
            "otpLength": otp_length,
            "countries": country_choices(allowed_countries),
        }
    )
    markup = _asset("index.html")
    if markup.count(CONFIG_MARKER) != 1:
        raise RuntimeError(f"widget/index.html must hold {CONFIG_MARKER} exactly once")
    return markup.replace(CONFIG_MARKER, html.escape(config.decode(), quote=True))


def widget_routes(
    allowed_origins: Sequence[str],
    otp_length: int,
    allowed_countries: Sequence[str] | None = None,
) -> list[BaseRoute]:
    """``allowed_origins`` are WIDGET_ALLOWED_ORIGINS, already in a browser's origin form;
    ``allowed_countries`` ALLOWED_COUNTRIES (None: every country)."""
    page = page_html(allowed_origins, otp_length, allowed_countries).encode()
    page_headers = {
        **NO_SNIFF,
        "content-security-policy": content_security_policy(allowed_origins),
        "referrer-policy": "no-referrer",
        # The page holds the configuration, which a restart may change.
        "cache-control": "no-store",
    }
    if not allowed_origins:
        page_headers["x-frame-options"] = "DENY"  # for browsers without frame-ancestors
    return page_routes(
        (PAGE_PATH, SCRIPT_PATH, STYLE_PATH),
        page,
        page_headers,
        _asset("widget.js").encode(),
        _asset("widget.css").encode(),
    )
