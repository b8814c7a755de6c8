"""The service checked against its own OpenAPI document by property-based fuzzing.

schemathesis generates requests from the document (its examples, boundary
values, then random valid and invalid ones) and sends them to the app
in-process; every answer must be no 5xx and must match the document: a
documented status, content type, headers and body, including the machine codes
each status may carry.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.routing import Route

from otpgate.http.app import create_app
from otpgate.http.openapi import build_openapi
from otpgate.http.schemas import verify_body_model
from otpgate.http.static_page import ICON_PATHS
from otpgate.wiring import build_components
from tests.conftest import make_settings
from tests.fakes import CapturingSender

# The document of an app on the default settings (6-digit codes, /metrics on the API port).
DOCUMENT = build_openapi(verify_body_model(6), metrics=True)
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture
def app(tmp_path: Path) -> Any:
    # schemathesis runs the app's lifespan and ends it after each test, closing the
    # store: each test gets an app of its own.
    app_settings = make_settings(tmp_path, rate_limit_max_requests=1_000_000)
    return create_app(build_components(app_settings, sender=CapturingSender()))


async def test_app_serves_the_document_under_test(app: Any) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://otpgate.test") as client:
        served = (await client.get("/openapi.json")).json()
    assert served == DOCUMENT


# A body can match the document and still be refused on its meaning: a number of the
# E.164 shape that no carrier allocates (400 invalid_phone_number), a well-formed but
# wrong code (400 invalid_code). Those 400s are the service working, so the check that
# every schema-valid request is accepted does not apply; every other check does.
NOT_APPLICABLE = [positive_data_acceptance]


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: Any, app: Any) -> None:
    case.call_and_validate(app=app, excluded_checks=NOT_APPLICABLE)


def test_document_is_valid_openapi() -> None:
    validate(DOCUMENT)


def test_every_route_is_documented(app: Any) -> None:
    starlette_app = app.app.app  # inside the observability middleware and the fast routes
    served = {
        (route.path, method.lower())
        for route in starlette_app.routes
        # The docs page's and the widget's own scripts and assets, and the pages' icon, are
        # not part of the API.
        if isinstance(route, Route)
        and not route.path.startswith(("/docs/", "/widget/"))
        and route.path not in ICON_PATHS
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, item in DOCUMENT["paths"].items() for method in item}
    assert served == documented


def _media(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody")
            if body:
                for media_type, media in body["content"].items():
                    yield f"{method} {path} body {media_type}", media
            for status, response in operation["responses"].items():
                for media_type, media in response.get("content", {}).items():
                    yield f"{method} {path} {status} {media_type}", media


@pytest.mark.parametrize(("where", "media"), list(_media(DOCUMENT)), ids=lambda v: str(v)[:60])
def test_every_body_has_examples_that_match_its_schema(where: str, media: dict[str, Any]) -> None:
    examples = [e["value"] for e in media.get("examples", {}).values()]
    if "example" in media:
        examples.append(media["example"])
    assert examples, f"{where} has no example"
    validator = jsonschema_rs.validator_for(
        {**media["schema"], "components": DOCUMENT["components"]}
    )
    for example in examples:
        assert validator.is_valid(example), f"{where}: {example} does not match"


def test_every_error_status_lists_its_machine_codes() -> None:
    for path in ("/api/v1/request-otp", "/api/v1/verify-otp"):
        responses = DOCUMENT["paths"][path]["post"]["responses"]
        for status, response in responses.items():
            if status == "200":
                continue
            codes = response["content"]["application/json"]["schema"]["allOf"][1]["properties"][
                "code"
            ]["enum"]
            assert codes
            assert set(response["content"]["application/json"]["examples"]) == set(codes)
            for code in codes:
                assert f"`{code}`" in response["description"]


async def test_docs_page_works_offline(app: Any) -> None:
    """Every asset of /docs comes from the service itself: no CDN, no inline script."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://otpgate.test") as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
        links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert "/favicon.svg" in links  # the service's icon, which every page links
        links.remove("/favicon.svg")
        assert links and all(link.startswith("/docs/") for link in links), links
        assert "<script>" not in page.text
        for link in links:
            asset = await client.get(link)
            assert asset.status_code == 200, link
            assert len(asset.content) > 1000 or link.endswith(".js"), link
        start = await client.get("/docs/start.js")
    assert start.text.startswith('SwaggerUIBundle({url: "/openapi.json"')
