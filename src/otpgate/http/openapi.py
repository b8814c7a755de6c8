"""The OpenAPI document, generated from the same models that validate bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from otpgate import __version__
from otpgate.http.errors import HTTP_CODES, STATUS_BY_CODE
from otpgate.http.schemas import (
    ErrorBody,
    HealthResponse,
    RequestOtpBody,
    RequestOtpResponse,
    VerifyOtpResponse,
)

_REF = "#/components/schemas/{model}"

# Which machine codes each route can answer with, grouped by status in the doc.
_ROUTE_CODES: dict[str, tuple[str, ...]] = {
    "request-otp": (
        "invalid_json",
        "invalid_body",
        "invalid_phone_number",
        "unsupported_media_type",
        "payload_too_large",
        "rate_limited",
        "country_not_allowed",
        "resend_cooldown",
        "phone_send_limit",
        "ip_phone_limit",
        "country_budget",
        "global_budget",
        "prefix_blocked",
        "country_blocked",
        "sms_number_rejected",
        "sms_provider_error",
        "sms_provider_unavailable",
        "store_unavailable",
    ),
    "verify-otp": (
        "invalid_json",
        "invalid_body",
        "invalid_phone_number",
        "invalid_code",
        "unsupported_media_type",
        "payload_too_large",
        "rate_limited",
        "too_many_attempts",
        "phone_locked",
        "store_unavailable",
    ),
}


def _status_of(code: str) -> int:
    return STATUS_BY_CODE.get(code) or HTTP_CODES[code][0]


def _error_responses(route: str) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in _ROUTE_CODES[route]:
        by_status.setdefault(_status_of(code), []).append(code)
    return {
        str(status): {
            "description": "Machine codes: " + ", ".join(f"`{c}`" for c in codes),
            "content": {
                "application/json": {
                    "schema": {"$ref": _REF.format(model="ErrorBody")},
                    "examples": {
                        c: {"value": {"statusCode": status, "code": c, "message": "..."}}
                        for c in codes
                    },
                }
            },
        }
        for status, codes in sorted(by_status.items())
    }


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}


def build_openapi(verify_model: type[BaseModel]) -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        RequestOtpBody,
        verify_model,
        RequestOtpResponse,
        VerifyOtpResponse,
        ErrorBody,
        HealthResponse,
    ]
    _, schemas = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "otpgate",
            "version": __version__,
            "description": "Phone verification codes over SMS.",
        },
        "paths": {
            "/api/v1/request-otp": {
                "post": {
                    "operationId": "requestOtp",
                    "summary": "Create a code and send it by SMS",
                    "requestBody": {"required": True, "content": _json(RequestOtpBody)},
                    "responses": {
                        "200": {"description": "Code sent", "content": _json(RequestOtpResponse)},
                        **_error_responses("request-otp"),
                    },
                }
            },
            "/api/v1/verify-otp": {
                "post": {
                    "operationId": "verifyOtp",
                    "summary": "Check a code once",
                    "requestBody": {"required": True, "content": _json(verify_model)},
                    "responses": {
                        "200": {
                            "description": "Code accepted",
                            "content": _json(VerifyOtpResponse),
                        },
                        **_error_responses("verify-otp"),
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness: answers without touching any dependency",
                    "responses": {
                        "200": {"description": "Alive", "content": _json(HealthResponse)}
                    },
                }
            },
        },
        "components": {"schemas": schemas.get("$defs", {})},
    }


def swagger_html(spec_url: str) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>otpgate API</title>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "{spec_url}", dom_id: "#ui"}});</script>
</body></html>"""
