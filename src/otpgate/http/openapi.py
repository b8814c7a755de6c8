"""The OpenAPI document, generated from the same models that validate bodies.

Each error status of a route lists the machine codes it can carry, and its
schema narrows ``code`` to exactly those, so a test that fuzzes the app against
this document also checks that the code-to-status mapping is what it says.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from otpgate import __version__
from otpgate.domain.errors import OtpError, RateLimited
from otpgate.domain.factors.values import FACTOR_ID_PATTERN, IDENTITY_PATTERN
from otpgate.domain.limits import LIMIT_MESSAGES
from otpgate.http.errors import HTTP_CODES, STATUS_BY_CODE
from otpgate.http.factor_schemas import (
    ChallengeBody,
    ChallengeResponse,
    EnrolFactorBody,
    EnrolmentResponse,
    FactorCodeBody,
    FactorListResponse,
    FactorResponse,
    RecoveryCodesResponse,
    RecoveryCountResponse,
)
from otpgate.http.schemas import (
    ErrorBody,
    HealthResponse,
    JwksResponse,
    NotReadyResponse,
    ReadyResponse,
    RequestOtpBody,
    RequestOtpResponse,
    VerificationResponse,
    VerifyOtpResponse,
)

_REF = "#/components/schemas/{model}"

# A token and the key that signed it, for the examples (the key is not one of yours).
_EXAMPLE_JWT = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiIsImtpZCI6Ik5CdkVMM3VUdTRpRWgzRUxQRHlQN0hWcjd1SmpxdVB6"
    "bGVHcVBrdUZlekkifQ.eyJpc3MiOiJvdHBnYXRlIiwiYXVkIjoib3RwZ2F0ZSIsInN1YiI6IisxMjEyNTU1MDEy"
    "MyIsImlhdCI6MTc2NzIyNTYwMCwiZXhwIjoxNzY3MjI1OTAwLCJqdGkiOiI4ZjE0ZTQ1ZmNlZWExNjdhNWEzNmRl"
    "ZGQ0YmVhMjU0MyIsImFtciI6WyJzbXMiXX0.ObmUcd1neHTP-SgsX33fFvzexijwIfi4IrxapXqLns0xEm53kbnR"
    "sV64npV7yC40Y-3OkQopnED4Bmi0WyOWqw"
)
_EXAMPLE_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "dryjNNkmosrsImXyWI9Uy1P29N8yn42nzAttBm7thkA",
    "y": "pB7iO7s2BXJslbNLkmEAheLvlSZw46NHKhgDbCgdcq4",
    "kid": "NBvEL3uTu4iEh3ELPDyP7HVr7uJjquPzleGqPkuFezI",
    "alg": "ES256",
    "use": "sig",
}

# What every factor route can answer with; each adds its own (``_ROUTE_CODES``).
_FACTOR_CODES: tuple[str, ...] = (
    "invalid_json",
    "invalid_body",
    "unsupported_media_type",
    "payload_too_large",
    "invalid_end_user_ip",
    "invalid_api_key",
    "rate_limited",
    "invalid_identity",
    "store_unavailable",
    "credentials_unavailable",
)

# Which machine codes each route can answer with, grouped by status in the doc.
_ROUTE_CODES: dict[str, tuple[str, ...]] = {
    "request-otp": (
        "invalid_json",
        "invalid_body",
        "invalid_phone_number",
        "landline_not_supported",
        "invalid_email",
        "invalid_channel",
        "channel_not_enabled",
        "invalid_locale",
        "unsupported_media_type",
        "payload_too_large",
        "invalid_end_user_ip",
        "invalid_api_key",
        "rate_limited",
        "country_not_allowed",
        "resend_cooldown",
        "phone_send_limit",
        "ip_phone_limit",
        "country_budget",
        "global_budget",
        "prefix_blocked",
        "country_blocked",
        "email_send_limit",
        "ip_email_limit",
        "email_domain_budget",
        "sms_number_rejected",
        "sms_number_opted_out",
        "sms_provider_error",
        "sms_provider_unavailable",
        "recipient_rejected",
        "provider_error",
        "provider_unavailable",
        "store_unavailable",
        "shutting_down",
    ),
    "verify-otp": (
        "invalid_json",
        "invalid_body",
        "invalid_phone_number",
        "invalid_email",
        "invalid_code",
        "unsupported_media_type",
        "payload_too_large",
        "invalid_end_user_ip",
        "invalid_api_key",
        "rate_limited",
        "too_many_attempts",
        "phone_locked",
        "store_unavailable",
        "shutting_down",
    ),
    # The factor routes (http/factors.py): a key always, and the credential database.
    "factors": _FACTOR_CODES,
    "factor": (*_FACTOR_CODES, "factor_not_found"),
    "factor-code": (
        *_FACTOR_CODES,
        "factor_not_found",
        "invalid_code",
        "factor_already_verified",
        "too_many_attempts",
    ),
    # Looking one up and cancelling it fail alike.
    "verification": (
        "invalid_api_key",
        "rate_limited",
        "verification_not_found",
        "store_unavailable",
    ),
}

_EXAMPLE_VERIFICATION_ID = "VE0123456789abcdef0123456789abcdef"
_VERIFICATION_ID_PARAM = {
    "name": "verification_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^VE[0-9a-f]{32}$"},
    "example": _EXAMPLE_VERIFICATION_ID,
}


def _verification_example(status: str) -> dict[str, Any]:
    return {
        "id": _EXAMPLE_VERIFICATION_ID,
        "phoneNumber": "+1212***0123",
        "status": status,
        "channel": "sms",
        "purpose": "login",
        "createdAt": "2026-11-30T12:00:00.000Z",
        "updatedAt": "2026-11-30T12:00:00.000Z",
        "expiresAt": "2026-11-30T12:05:00.000Z",
    }


def _status_of(code: str) -> int:
    return STATUS_BY_CODE.get(code) or HTTP_CODES[code][0]


def _messages() -> dict[str, str]:
    """The message a client sees for each machine code, for the examples."""
    found = {code: message for code, (_, message) in HTTP_CODES.items()}
    found.update(LIMIT_MESSAGES)
    pending: list[type[OtpError]] = [OtpError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "code" in vars(cls):
            found[cls.code] = cls.message
    found[RateLimited.code] = str(RateLimited(42))  # its message names the wait
    return found


_REQUEST_ID_PARAM: dict[str, Any] = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "Your id for this request, echoed back and written on its log lines."
    " Kept when it is 1-128 visible ASCII characters, else replaced by a generated one.",
    "schema": {"type": "string"},
    "example": "3f2b9c1e-4a7d-4e0b-9d6f-0c8a5e2b7d11",
}

_REQUEST_ID_HEADER: dict[str, Any] = {
    "X-Request-ID": {
        "description": "The request's id: yours if it was acceptable, else a generated one.",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    }
}

_END_USER_IP_PARAM: dict[str, Any] = {
    "name": "X-End-User-IP",
    "in": "header",
    "required": False,
    "description": "With a valid API key only: the address of the end user this request is"
    " made for. The per-IP limits then count that address (an IPv6 one by its prefix)"
    " instead of the caller's. Ignored without a valid key; not an IP address: 400"
    " `invalid_end_user_ip`.",
    "schema": {"type": "string"},
    "example": "203.0.113.9",
}

# The one security scheme: an API key sent as a bearer token.
SECURITY_SCHEME = "apiKey"
_SECURITY_SCHEMES: dict[str, Any] = {
    SECURITY_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from API_KEYS, as `Authorization: Bearer <key>`. Needed"
        " when API_AUTH=required; in every mode a key that is sent must be valid (else 401"
        " `invalid_api_key`).",
    }
}

_INT_HEADER: dict[str, Any] = {"schema": {"type": "string", "pattern": "^[0-9]+$"}}

# Sent by the per-IP limit on every answer of a limited route, when the limit could be
# checked (not when the store is down).
_LIMIT_HEADERS: dict[str, Any] = {
    "X-RateLimit-Limit": {"description": "Requests allowed per window.", **_INT_HEADER},
    "X-RateLimit-Remaining": {"description": "Requests left in this window.", **_INT_HEADER},
    "X-RateLimit-Reset": {"description": "Seconds until the window resets.", **_INT_HEADER},
}
_CACHE_CONTROL: dict[str, Any] = {
    "Cache-Control": {
        "description": "How long the keys may be cached.",
        "schema": {"type": "string"},
        "example": "public, max-age=300",
    }
}
_RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {"description": "Seconds to wait before trying again.", **_INT_HEADER}
}
_CHALLENGE: dict[str, Any] = {
    "WWW-Authenticate": {
        "description": "The scheme to authenticate with.",
        "required": True,
        "schema": {"const": "Bearer"},
    }
}


def _error_responses(route: str) -> dict[str, Any]:
    messages = _messages()
    by_status: dict[int, list[str]] = {}
    for code in _ROUTE_CODES[route]:
        by_status.setdefault(_status_of(code), []).append(code)
    responses = {}
    for status, codes in sorted(by_status.items()):
        if status == 401:
            # Refused before the per-IP limit is counted: no limit headers.
            headers = {**_REQUEST_ID_HEADER, **_CHALLENGE}
        else:
            headers = {**_REQUEST_ID_HEADER, **_LIMIT_HEADERS}
        if status == 429:
            headers.update(_RETRY_AFTER)
        responses[str(status)] = {
            "description": "Machine codes: " + ", ".join(f"`{c}`" for c in codes),
            "headers": headers,
            "content": {
                "application/json": {
                    "schema": {
                        "allOf": [
                            {"$ref": _REF.format(model="ErrorBody")},
                            {
                                "type": "object",
                                "properties": {
                                    "statusCode": {"const": status},
                                    "error": {"const": HTTPStatus(status).phrase},
                                    "code": {"enum": codes},
                                },
                            },
                        ]
                    },
                    "examples": {
                        c: {
                            "summary": c,
                            "value": {
                                "statusCode": status,
                                "error": HTTPStatus(status).phrase,
                                "message": messages.get(c, c),
                                "code": c,
                            },
                        }
                        for c in codes
                    },
                }
            },
        }
    return responses


def _json(model: type[BaseModel], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": {"$ref": _REF.format(model=model.__name__)}}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _otp_example(verify_model: type[BaseModel]) -> str:
    return str(verify_model.model_json_schema()["properties"]["otp"]["examples"][0])


def _ok(description: str, content: dict[str, Any], **headers: Any) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {**_REQUEST_ID_HEADER, **headers},
        "content": content,
    }


def build_openapi(
    verify_model: type[BaseModel], *, metrics: bool = True, auth_required: bool = False
) -> dict[str, Any]:
    """The document; ``metrics`` says whether /metrics is served on this port,
    ``auth_required`` whether the API routes need a key (API_AUTH=required)."""
    # Without API_AUTH=required a key is optional (the empty requirement).
    security: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
    if not auth_required:
        security.append({})
    models: list[type[BaseModel]] = [
        RequestOtpBody,
        verify_model,
        RequestOtpResponse,
        VerifyOtpResponse,
        ErrorBody,
        HealthResponse,
        ReadyResponse,
        NotReadyResponse,
        JwksResponse,
        VerificationResponse,
        EnrolFactorBody,
        FactorCodeBody,
        ChallengeBody,
        FactorResponse,
        EnrolmentResponse,
        FactorListResponse,
        ChallengeResponse,
        RecoveryCodesResponse,
        RecoveryCountResponse,
    ]
    _, schemas = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    paths: dict[str, Any] = {
        "/api/v1/request-otp": {
            "post": {
                "operationId": "requestOtp",
                "security": security,
                "summary": "Create a code and send it (SMS, WhatsApp, a voice call or email)",
                "description": "Subject to the per-IP limit, the resend cooldown and the"
                " per-recipient send limit. A failed send stores nothing and charges no limit."
                " `locale` picks the message's language, falling back to English. `channel`"
                " picks how it goes out (SMS by default); for email, send `email` in place"
                " of `phoneNumber`. A channel whose provider is down may fall back to"
                " another (CHANNEL_FALLBACK); the answer's `channel` says which delivered.",
                "tags": ["otp"],
                "parameters": [_REQUEST_ID_PARAM, _END_USER_IP_PARAM],
                "requestBody": {
                    "required": True,
                    "content": _json(RequestOtpBody, {"phoneNumber": "+12125550123"}),
                },
                "responses": {
                    "200": _ok(
                        "Code sent",
                        _json(
                            RequestOtpResponse,
                            {
                                "message": "OTP requested successfully. Check your phone.",
                                "messageId": "5c3e9a4e-2b8f-5f3a-9c7e-1d2f3a4b5c6d",
                                "expiresIn": 300,
                                "verificationId": _EXAMPLE_VERIFICATION_ID,
                            },
                        ),
                        **_LIMIT_HEADERS,
                    ),
                    **_error_responses("request-otp"),
                },
            }
        },
        "/api/v1/verify-otp": {
            "post": {
                "operationId": "verifyOtp",
                "security": security,
                "summary": "Check a code once",
                "description": "Wrong, expired, already used and never requested codes all get"
                " the same `invalid_code` answer. An email code is checked with `email` in"
                " place of `phoneNumber` (or by `verificationId`). A code is accepted at most"
                " once; its 200 carries a signed `token` for your backend to check against"
                " `/.well-known/jwks.json`.",
                "tags": ["otp"],
                "parameters": [_REQUEST_ID_PARAM, _END_USER_IP_PARAM],
                "requestBody": {
                    "required": True,
                    "content": _json(
                        verify_model,
                        {"phoneNumber": "+12125550123", "otp": _otp_example(verify_model)},
                    ),
                },
                "responses": {
                    "200": _ok(
                        "Code accepted",
                        _json(
                            VerifyOtpResponse,
                            {
                                "success": True,
                                "message": "OTP verified successfully.",
                                "token": _EXAMPLE_JWT,
                                "verificationId": _EXAMPLE_VERIFICATION_ID,
                            },
                        ),
                        **_LIMIT_HEADERS,
                    ),
                    **_error_responses("verify-otp"),
                },
            }
        },
        "/api/v1/verifications/{verification_id}": {
            "get": {
                "operationId": "getVerification",
                "security": security,
                "summary": "What became of a verification",
                "description": "Its status, kept `VERIFICATION_RETENTION_SECONDS` after its"
                " code expired. The phone number is masked unless the caller sent a valid"
                " API key. Never a code.",
                "tags": ["verifications"],
                "parameters": [_VERIFICATION_ID_PARAM, _REQUEST_ID_PARAM, _END_USER_IP_PARAM],
                "responses": {
                    "200": _ok(
                        "The verification",
                        _json(VerificationResponse, _verification_example("pending")),
                        **_LIMIT_HEADERS,
                    ),
                    **_error_responses("verification"),
                },
            }
        },
        "/api/v1/verifications/{verification_id}/cancel": {
            "post": {
                "operationId": "cancelVerification",
                # A valid key in every API_AUTH mode.
                "security": [{SECURITY_SCHEME: []}],
                "summary": "Cancel a pending verification",
                "description": "Its code stops working at once. A verification that is no"
                " longer pending is answered as it stands. Needs a valid API key whatever"
                " `API_AUTH` says.",
                "tags": ["verifications"],
                "parameters": [_VERIFICATION_ID_PARAM, _REQUEST_ID_PARAM, _END_USER_IP_PARAM],
                "responses": {
                    "200": _ok(
                        "The verification, as it now stands",
                        _json(VerificationResponse, _verification_example("canceled")),
                        **_LIMIT_HEADERS,
                    ),
                    **_error_responses("verification"),
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness: answers without touching any dependency",
                "tags": ["operations"],
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "200": _ok("Alive", _json(HealthResponse, {"status": "ok"})),
                },
            }
        },
        "/ready": {
            "get": {
                "operationId": "ready",
                "summary": "Readiness: the store answers and the SMS provider is usable",
                "tags": ["operations"],
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "200": _ok("Ready for traffic", _json(ReadyResponse, {"status": "ready"})),
                    "503": _ok(
                        "Not ready, with the reasons",
                        _json(
                            NotReadyResponse,
                            {"status": "not ready", "reasons": ["store (redis) is not answering"]},
                        ),
                    ),
                },
            }
        },
        "/.well-known/jwks.json": {
            "get": {
                "operationId": "jwks",
                "summary": "The public keys that check a verify's token (JWK Set)",
                "description": "Every key in TOKEN_SIGNING_KEYS_FILE, the signing one first."
                " Cache it as Cache-Control says, and fetch it again on an unknown `kid`.",
                "tags": ["tokens"],
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "200": _ok(
                        "JWK Set",
                        _json(JwksResponse, {"keys": [_EXAMPLE_JWK]}),
                        **_CACHE_CONTROL,
                    ),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["operations"],
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "200": _ok(
                        "OpenAPI 3.1 document",
                        {
                            "application/json": {
                                "schema": {"type": "object", "required": ["openapi", "paths"]},
                                "example": {"openapi": "3.1.0", "info": {}, "paths": {}},
                            }
                        },
                    ),
                },
            }
        },
        "/docs": {
            "get": {
                "operationId": "docs",
                "summary": "Interactive API documentation (Swagger UI)",
                "tags": ["operations"],
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "200": _ok(
                        "HTML page",
                        {
                            "text/html": {
                                "schema": {"type": "string"},
                                "example": "<!doctype html><html>...</html>",
                            }
                        },
                    ),
                },
            }
        },
        "/widget": {
            "get": {
                "operationId": "widget",
                "summary": "Drop-in verification page, to frame or to open with a return_url",
                "description": "Asks for a phone number, sends the code, checks it and hands"
                " the token to the embedding page (postMessage to `origin`) or to `return_url`"
                " (in the fragment); both must be in WIDGET_ALLOWED_ORIGINS. See the README.",
                "tags": ["widget"],
                "parameters": [
                    _REQUEST_ID_PARAM,
                    *(
                        {
                            "name": name,
                            "in": "query",
                            "required": False,
                            "description": text,
                            "schema": {"type": "string"},
                        }
                        for name, text in (
                            ("origin", "The embedding page's origin, for postMessage."),
                            ("return_url", "Where to go with `#token=...` once verified."),
                            ("purpose", "Passed through to the API calls."),
                            ("phone", "A phone number to fill in."),
                        )
                    ),
                ],
                "responses": {
                    "200": _ok(
                        "HTML page",
                        {
                            "text/html": {
                                "schema": {"type": "string"},
                                "example": "<!doctype html><html>...</html>",
                            }
                        },
                    ),
                },
            }
        },
    }
    paths.update(_factor_paths())
    if metrics:
        paths["/metrics"] = {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, text exposition format 0.0.4",
                "description": "Absent when METRICS_ENABLED=false or METRICS_PORT is set.",
                "tags": ["operations"],
                "parameters": [_REQUEST_ID_PARAM],
                "responses": {
                    "200": _ok(
                        "Metrics",
                        {
                            "text/plain": {
                                "schema": {"type": "string"},
                                "example": 'otpgate_verifications_total{outcome="approved"} 12.0\n',
                            }
                        },
                    ),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "otpgate",
            "version": __version__,
            "description": "Verification codes over SMS, WhatsApp, voice calls and email.\n\n"
            "Every error answer has the body `{statusCode, error, message, code}`; `code` is a"
            " stable machine string to switch on, listed per status below.\n\n"
            "The API routes take an API key as `Authorization: Bearer <key>`: required when"
            " the service runs with API_AUTH=required, and checked whenever one is sent.",
        },
        "tags": [
            {"name": "otp", "description": "Send and check codes"},
            {"name": "tokens", "description": "Keys to check a verify's token with"},
            {
                "name": "factors",
                "description": "Authenticator apps and recovery codes for your users' ids",
            },
            {"name": "operations", "description": "Probes, metrics and documentation"},
            {"name": "widget", "description": "A verification page to embed"},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


_IDENTITY_PARAM: dict[str, Any] = {
    "name": "identity",
    "in": "path",
    "required": True,
    "description": "Your own id for the user: 1 to 128 letters, digits or `_ . @ : + -`.",
    "schema": {"type": "string", "pattern": IDENTITY_PATTERN},
    "example": "user-42",
}
_FACTOR_ID_PARAM: dict[str, Any] = {
    "name": "factor_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": FACTOR_ID_PATTERN},
    "example": "YF0123456789abcdef0123456789abcdef",
}
_FACTOR_EXAMPLE: dict[str, Any] = {
    "id": "YF0123456789abcdef0123456789abcdef",
    "identity": "user-42",
    "type": "totp",
    "status": "verified",
    "name": "Work phone",
    "digits": 6,
    "period": 30,
    "algorithm": "SHA1",
    "createdAt": "2026-11-30T12:00:00.000Z",
    "verifiedAt": "2026-11-30T12:00:30.000Z",
}
_NO_STORE_HEADER: dict[str, Any] = {
    "Cache-Control": {"description": "Never cached.", "schema": {"const": "no-store"}}
}


def _factor_op(
    operation_id: str,
    summary: str,
    description: str,
    codes: str,
    ok: tuple[str, str, dict[str, Any]],
    *,
    body: tuple[type[BaseModel], Any] | None = None,
    factor: bool = False,
) -> dict[str, Any]:
    status, what, content = ok
    params = [_IDENTITY_PARAM, *([_FACTOR_ID_PARAM] if factor else [])]
    op: dict[str, Any] = {
        "operationId": operation_id,
        "security": [{SECURITY_SCHEME: []}],
        "summary": summary,
        "description": description + " Needs a valid API key whatever `API_AUTH` says.",
        "tags": ["factors"],
        "parameters": [*params, _REQUEST_ID_PARAM, _END_USER_IP_PARAM],
        "responses": {
            status: {
                "description": what,
                "headers": {**_REQUEST_ID_HEADER, **_LIMIT_HEADERS, **_NO_STORE_HEADER},
                **({"content": content} if content else {}),
            },
            **_error_responses(codes),
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body[0], body[1])}
    return op


def _factor_paths() -> dict[str, Any]:
    """The factor routes (``http/factors.py``)."""
    base = "/api/v1/identities/{identity}"
    enrolled = {
        **_FACTOR_EXAMPLE,
        "status": "unverified",
        "verifiedAt": None,
        "secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        "uri": "otpauth://totp/otpgate:user-42?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
        "&issuer=otpgate",
        "qrSvg": "<svg ...>...</svg>",
    }
    token = {"success": True, "token": _EXAMPLE_JWT, "method": "totp", "factorId": enrolled["id"]}
    return {
        f"{base}/factors": {
            "post": _factor_op(
                "enrolFactor",
                "Enrol an authenticator app",
                "A new TOTP factor (RFC 6238: SHA-1, 6 digits, 30 seconds), `unverified` until"
                " a first code activates it. The answer is the only one that holds the secret:"
                " base32, as an otpauth:// URI, and as a QR code (SVG).",
                "factors",
                ("201", "The factor, with its secret", _json(EnrolmentResponse, enrolled)),
                body=(EnrolFactorBody, {"type": "totp", "name": "Work phone"}),
            ),
            "get": _factor_op(
                "listFactors",
                "The identity's factors",
                "Never a secret.",
                "factors",
                ("200", "The factors", _json(FactorListResponse, {"factors": [_FACTOR_EXAMPLE]})),
            ),
        },
        f"{base}/factors/{{factor_id}}/verify": {
            "post": _factor_op(
                "verifyFactor",
                "Activate a factor with its first code",
                "The first right code turns it `verified`; wrong codes count toward the"
                " identity's lockout.",
                "factor-code",
                ("200", "The verified factor", _json(FactorResponse, _FACTOR_EXAMPLE)),
                body=(FactorCodeBody, {"code": "492039"}),
                factor=True,
            ),
        },
        f"{base}/factors/{{factor_id}}": {
            "delete": _factor_op(
                "deleteFactor",
                "Delete a factor",
                "Its codes stop working at once.",
                "factor",
                ("204", "Deleted", {}),
                factor=True,
            ),
        },
        f"{base}/challenges": {
            "post": _factor_op(
                "challenge",
                "Check an authenticator app's code, or a recovery code",
                "A code of a verified factor (`factorId`, `code`), each time step's at most"
                " once, or a `recoveryCode`, each at most once. A right one answers the signed"
                " token a verified code does. Wrong, replayed and used codes all get"
                " `invalid_code`; past the lockout, `too_many_attempts` with Retry-After.",
                "factor-code",
                ("200", "The token", _json(ChallengeResponse, token)),
                body=(ChallengeBody, {"factorId": enrolled["id"], "code": "492039"}),
            ),
        },
        f"{base}/recovery-codes": {
            "post": _factor_op(
                "newRecoveryCodes",
                "Make a new set of recovery codes",
                "Shown this once, kept only as keyed hashes; every earlier code is void.",
                "factors",
                (
                    "201",
                    "The new set",
                    _json(RecoveryCodesResponse, {"codes": ["7k4m-q2xh"], "remaining": 1}),
                ),
            ),
            "get": _factor_op(
                "recoveryCodesLeft",
                "How many recovery codes are left",
                "Never a code.",
                "factors",
                ("200", "The count", _json(RecoveryCountResponse, {"remaining": 7})),
            ),
        },
    }
