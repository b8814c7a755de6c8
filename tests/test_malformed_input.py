"""Whatever a client sends, the answer is a 4xx with the error body, never a 500."""

from __future__ import annotations

import pytest

from tests.conftest import ServiceFactory

VERIFY = "/api/v1/verify-otp"
REQUEST = "/api/v1/request-otp"
JSON = {"content-type": "application/json"}

CASES = [
    # (name, path, raw body, headers, status, machine code)
    ("invalid json", VERIFY, b"{not json", JSON, 400, "invalid_json"),
    ("empty body", REQUEST, b"", JSON, 400, "invalid_json"),
    ("json array", REQUEST, b"[]", JSON, 400, "invalid_json"),
    ("json string", REQUEST, b'"+12125550123"', JSON, 400, "invalid_json"),
    ("null", REQUEST, b"null", JSON, 400, "invalid_json"),
    ("missing phone", REQUEST, b"{}", JSON, 400, "invalid_body"),
    ("phone is a number", REQUEST, b'{"phoneNumber": 12125550123}', JSON, 400, "invalid_body"),
    ("phone is null", REQUEST, b'{"phoneNumber": null}', JSON, 400, "invalid_body"),
    (
        "extra property",
        REQUEST,
        b'{"phoneNumber": "+12125550123", "x": 1}',
        JSON,
        400,
        "invalid_body",
    ),
    (
        "unanchored phone",
        REQUEST,
        b'{"phoneNumber": "+1212555012345678901"}',
        JSON,
        400,
        "invalid_body",
    ),
    ("national format", REQUEST, b'{"phoneNumber": "(212) 555-0123"}', JSON, 400, "invalid_body"),
    (
        "unallocated number",
        REQUEST,
        b'{"phoneNumber": "+15551234567"}',
        JSON,
        400,
        "invalid_phone_number",
    ),
    (
        "otp too long",
        VERIFY,
        b'{"phoneNumber": "+12125550123", "otp": "1234567"}',
        JSON,
        400,
        "invalid_body",
    ),
    (
        "otp letters",
        VERIFY,
        b'{"phoneNumber": "+12125550123", "otp": "12a456"}',
        JSON,
        400,
        "invalid_body",
    ),
    (
        "otp as number",
        VERIFY,
        b'{"phoneNumber": "+12125550123", "otp": 123456}',
        JSON,
        400,
        "invalid_body",
    ),
    ("otp missing", VERIFY, b'{"phoneNumber": "+12125550123"}', JSON, 400, "invalid_body"),
    (
        "huge body",
        REQUEST,
        b'{"phoneNumber": "' + b"1" * 100_000 + b'"}',
        JSON,
        413,
        "payload_too_large",
    ),
    (
        "form encoded",
        REQUEST,
        b"phoneNumber=%2B12125550123",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
    ),
    (
        "no content type",
        REQUEST,
        b'{"phoneNumber": "+12125550123"}',
        {},
        415,
        "unsupported_media_type",
    ),
    ("deeply nested", REQUEST, b"[" * 1500 + b"]" * 1500, JSON, 400, "invalid_json"),
    ("invalid utf-8", REQUEST, b'{"phoneNumber": "\xff\xfe"}', JSON, 400, "invalid_json"),
]


@pytest.mark.parametrize(
    ("name", "path", "body", "headers", "status", "code"), CASES, ids=[c[0] for c in CASES]
)
async def test_malformed_input(
    make_service: ServiceFactory,
    name: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    svc = await make_service(rate_limit_max_requests=1000)
    r = await svc.client.post(path, content=body, headers=headers)
    assert r.status_code == status, r.text
    payload = r.json()
    assert payload["code"] == code
    assert payload["statusCode"] == status
    assert set(payload) == {"statusCode", "error", "message", "code"}


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", VERIFY, 405, "method_not_allowed"), ("POST", "/nope", 404, "not_found")],
)
async def test_unknown_routes(
    make_service: ServiceFactory, method: str, path: str, status: int, code: str
) -> None:
    svc = await make_service()
    r = await svc.client.request(method, path)
    assert r.status_code == status
    assert r.json()["code"] == code


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", " application/json "]
)
async def test_json_content_type_with_parameters_or_case(
    make_service: ServiceFactory, content_type: str
) -> None:
    # Only the media type counts, whatever its case or parameters; the body then reaches
    # validation (a well-formed unallocated number, so no SMS is involved).
    svc = await make_service()
    r = await svc.client.post(
        REQUEST, content=b'{"phoneNumber": "+15551234567"}', headers={"content-type": content_type}
    )
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_phone_number"
