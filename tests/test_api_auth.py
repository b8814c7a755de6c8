"""API keys at the door: every mode, every API route, both HTTP paths, no key in any log.

The apps come from ``make_service``, so each test runs on the fast path (FastRoutes in
front of Starlette) and on the stock one (Starlette's routing). The check sits before
any store step, so one store (SQLite) is enough here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from otpgate.http.openapi import build_openapi
from otpgate.http.schemas import verify_body_model
from otpgate.observability.logs import configure_logging
from tests.conftest import ServiceFactory
from tests.fakes import CapturingSender
from tests.service_process import ServiceProcess

PHONE = "+12125550123"
PLAIN_KEY = "ci-" + "Zq7xK2pL" * 5
HASHED_KEY = "web-" + "Rt5mW9vB" * 5
HASHED_DIGEST = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
WRONG_KEY = PLAIN_KEY[:-1] + "M"  # one character off a real one
KEYS = f"ci:{PLAIN_KEY},web:sha256:{HASHED_DIGEST}"
OPEN = {"rate_limit_max_requests": 1000}
# Verifies of a phone without a code count attempts like wrong codes; these tests make many.
ATTEMPTS = {"otp_max_attempts": 20}

CREDENTIALS: dict[str, str | None] = {
    "none": None,
    "wrong": WRONG_KEY,
    "plain": PLAIN_KEY,
    "hashed": HASHED_KEY,
}
NAMES = {"plain": "ci", "hashed": "web"}
INVALID = "Invalid API key."
MISSING = "An API key is required: send Authorization: Bearer <key>."


@pytest.fixture
def store_kind() -> str:
    return "sqlite"


def bearer(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key is not None else {}


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "otpgate.access"]


def unauthorized_body(message: str) -> dict[str, Any]:
    return {
        "statusCode": 401,
        "error": "Unauthorized",
        "message": message,
        "code": "invalid_api_key",
    }


@pytest.mark.parametrize("route", ["request-otp", "verify-otp"])
@pytest.mark.parametrize("credential", list(CREDENTIALS))
@pytest.mark.parametrize("mode", ["off", "optional", "required"])
async def test_every_mode_and_key_on_every_route(
    make_service: ServiceFactory,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    credential: str,
    route: str,
) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, api_auth=mode, api_keys=KEYS, **OPEN)
    caplog.set_level(logging.INFO, logger="otpgate.access")
    headers = bearer(CREDENTIALS[credential])
    if route == "request-otp":
        answer = await svc.request(PHONE, headers=headers)
    else:
        # A code to verify, asked for with a key that is valid in every mode.
        assert (await svc.request(PHONE, headers=bearer(PLAIN_KEY))).status_code == 200
        code = sender.last_code(PHONE)
        caplog.clear()
        answer = await svc.verify(PHONE, code, headers=headers)
    [line] = access_lines(caplog)

    refused = credential == "wrong" or (credential == "none" and mode == "required")
    if refused:
        assert answer.status_code == 401
        assert answer.json() == unauthorized_body(INVALID if credential == "wrong" else MISSING)
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.headers["x-request-id"]
        # Refused before the per-IP limit: nothing counted, so no limit headers.
        assert "x-ratelimit-limit" not in answer.headers
        assert (line.status, line.code) == (401, "invalid_api_key")
        assert not hasattr(line, "api_key_name")
        if route == "request-otp":
            assert sender.sent == []
        else:
            # The refused verify neither counted an attempt nor used the code.
            again = await svc.verify(PHONE, code, headers=bearer(PLAIN_KEY))
            assert again.status_code == 200
    else:
        assert answer.status_code == 200, answer.text
        assert "www-authenticate" not in answer.headers
        assert answer.headers["x-ratelimit-limit"] == "1000"
        assert line.status == 200
        assert getattr(line, "api_key_name", None) == NAMES.get(credential)
        if route == "request-otp":
            assert [to for to, _ in sender.sent] == [PHONE]


@pytest.mark.parametrize("route", ["verification", "cancel"])
@pytest.mark.parametrize("credential", list(CREDENTIALS))
@pytest.mark.parametrize("mode", ["off", "optional", "required"])
async def test_every_mode_and_key_on_the_verification_routes(
    make_service: ServiceFactory, mode: str, credential: str, route: str
) -> None:
    """Looking a verification up follows API_AUTH (and shows the phone only to a key);
    cancelling one needs a valid key in every mode."""
    svc = await make_service(api_auth=mode, api_keys=KEYS, **OPEN)
    opened = await svc.request(PHONE, headers=bearer(PLAIN_KEY))
    vid = opened.json()["verificationId"]
    headers = bearer(CREDENTIALS[credential])
    if route == "verification":
        answer = await svc.client.get(f"/api/v1/verifications/{vid}", headers=headers)
        refused = credential == "wrong" or (credential == "none" and mode == "required")
    else:
        answer = await svc.client.post(f"/api/v1/verifications/{vid}/cancel", headers=headers)
        refused = credential in ("wrong", "none")
    if refused:
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == "invalid_api_key"
        assert answer.headers["www-authenticate"] == "Bearer"
        still = await svc.client.get(f"/api/v1/verifications/{vid}", headers=bearer(PLAIN_KEY))
        assert still.json()["status"] == "pending"
        return
    assert answer.status_code == 200, answer.text
    record = answer.json()
    keyed = credential in ("plain", "hashed")
    assert record["phoneNumber"] == (PHONE if keyed else PHONE[:5] + "***" + PHONE[-4:])
    assert record["status"] == ("pending" if route == "verification" else "canceled")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("authorization", f"bearer {PLAIN_KEY}")], 200),
        ([("authorization", f"BEARER {HASHED_KEY}")], 200),
        ([("authorization", f"Bearer  {PLAIN_KEY}")], 200),
        ([("authorization", PLAIN_KEY)], 401),
        ([("authorization", f"Token {PLAIN_KEY}")], 401),
        ([("authorization", "Basic Y2k6c2VjcmV0")], 401),
        ([("authorization", "Bearer")], 401),
        ([("authorization", "Bearer ")], 401),
        ([("authorization", f"Bearer {PLAIN_KEY} {PLAIN_KEY}")], 401),
        ([("authorization", f"Bearer {HASHED_DIGEST}")], 401),  # the digest is no key
        ([("authorization", f"Bearer sha256:{HASHED_DIGEST}")], 401),
        # Two credentials, even both valid: which one would count? Neither.
        ([("authorization", f"Bearer {PLAIN_KEY}"), ("authorization", f"Bearer {PLAIN_KEY}")], 401),
    ],
    ids=[
        "lower-scheme",
        "upper-scheme",
        "two-spaces",
        "no-scheme",
        "other-scheme",
        "basic",
        "bearer-alone",
        "bearer-empty",
        "key-twice-in-one",
        "digest",
        "sha256-form",
        "two-headers",
    ],
)
async def test_only_one_bearer_key_is_a_key(
    make_service: ServiceFactory, headers: list[tuple[str, str]], status: int
) -> None:
    svc = await make_service(api_auth="optional", api_keys=KEYS, **OPEN)
    answer = await svc.request(PHONE, headers=headers)
    assert answer.status_code == status, answer.text
    if status == 401:
        assert answer.json() == unauthorized_body(INVALID)


@pytest.mark.parametrize("mode", ["off", "optional"])
async def test_a_key_sent_to_a_service_without_keys_is_refused(
    make_service: ServiceFactory, mode: str
) -> None:
    svc = await make_service(api_auth=mode, **OPEN)
    assert (await svc.request(PHONE)).status_code == 200
    refused = await svc.request("+12125550124", headers=bearer(PLAIN_KEY))
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_api_key"


@pytest.mark.parametrize("credential", [None, WRONG_KEY])
async def test_operations_routes_stay_open_when_keys_are_required(
    make_service: ServiceFactory, credential: str | None
) -> None:
    svc = await make_service(api_auth="required", api_keys=KEYS)
    for path in ("/health", "/ready", "/metrics", "/openapi.json", "/docs"):
        answer = await svc.client.get(path, headers=bearer(credential))
        assert answer.status_code == 200, path
    assert (await svc.request(PHONE, headers=bearer(credential))).status_code == 401


# --- X-End-User-IP ---------------------------------------------------------------------------


async def test_a_keyed_caller_spends_the_end_users_request_limit(
    make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    svc = await make_service(
        api_auth="optional", api_keys=KEYS, rate_limit_max_requests=2, **ATTEMPTS
    )
    caplog.set_level(logging.INFO, logger="otpgate.access")

    async def verify(end_user: str | None, key: str | None = PLAIN_KEY) -> int:
        headers = bearer(key) | ({"x-end-user-ip": end_user} if end_user else {})
        return (await svc.verify(PHONE, "123456", headers=headers)).status_code

    assert [await verify("198.51.100.7") for _ in range(3)] == [400, 400, 429]
    assert await verify("198.51.100.8") == 400  # another end user: a budget of its own
    # The caller's own budget (127.0.0.1) was never touched.
    assert [await verify(None) for _ in range(3)] == [400, 400, 429]
    assert await verify("198.51.100.8", key=HASHED_KEY) == 400  # same budget, any key
    assert await verify("198.51.100.8") == 429

    lines = access_lines(caplog)
    assert lines[0].client_ip == "127.0.0.1"  # the caller, as it connected
    assert lines[0].end_user_ip == "198.51.100.7"
    assert lines[0].api_key_name == "ci"
    assert not hasattr(lines[4], "end_user_ip")


async def test_an_ipv6_end_user_counts_by_its_prefix(make_service: ServiceFactory) -> None:
    svc = await make_service(
        api_auth="optional", api_keys=KEYS, rate_limit_max_requests=2, **ATTEMPTS
    )

    async def verify(end_user: str) -> int:
        headers = bearer(PLAIN_KEY) | {"x-end-user-ip": end_user}
        return (await svc.verify(PHONE, "123456", headers=headers)).status_code

    assert await verify("2001:db8:1:2::1") == 400
    assert await verify("2001:DB8:1:2:aaaa::ffff") == 400
    assert await verify("2001:db8:1:2::2") == 429  # the same /64
    assert await verify("2001:db8:1:3::1") == 400
    assert await verify("::ffff:198.51.100.7") == 400
    assert await verify("198.51.100.7") == 400  # an IPv4-mapped address is its IPv4 one
    assert await verify("198.51.100.7") == 429


async def test_a_keyed_caller_spends_the_end_users_phone_cap(make_service: ServiceFactory) -> None:
    svc = await make_service(api_auth="optional", api_keys=KEYS, ip_max_phones=2, **OPEN)

    async def send(phone: str, end_user: str) -> httpx.Response:
        return await svc.request(phone, headers=bearer(PLAIN_KEY) | {"x-end-user-ip": end_user})

    assert (await send("+12125550101", "203.0.113.1")).status_code == 200
    assert (await send("+12125550102", "203.0.113.1")).status_code == 200
    refused = await send("+12125550103", "203.0.113.1")
    assert (refused.status_code, refused.json()["code"]) == (429, "ip_phone_limit")
    assert (await send("+12125550103", "203.0.113.2")).status_code == 200


@pytest.mark.parametrize("mode", ["off", "optional"])
async def test_without_a_key_a_forged_end_user_changes_no_limit(
    make_service: ServiceFactory, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    svc = await make_service(api_auth=mode, api_keys=KEYS, rate_limit_max_requests=2, **ATTEMPTS)
    caplog.set_level(logging.INFO, logger="otpgate.access")
    replies = [
        await svc.verify(PHONE, "123456", headers={"x-end-user-ip": f"198.51.100.{n}"})
        for n in range(1, 4)
    ]
    # Three "end users", one caller: its own limit (2 a window) refused the third.
    assert [r.status_code for r in replies] == [400, 400, 429]
    assert replies[2].json()["code"] == "rate_limited"
    # Nor is a header that is no address at all refused: without a key it is not read.
    ignored = await svc.verify(PHONE, "123456", headers={"x-end-user-ip": "not an address"})
    assert ignored.json()["code"] == "rate_limited"
    # With a key the same header now picks a budget of its own.
    keyed = await svc.verify(
        PHONE, "123456", headers=bearer(PLAIN_KEY) | {"x-end-user-ip": "198.51.100.1"}
    )
    assert keyed.status_code == 400 and keyed.json()["code"] == "invalid_code"
    assert all(not hasattr(line, "end_user_ip") for line in access_lines(caplog)[:4])


@pytest.mark.parametrize("mode", ["off", "optional"])
async def test_without_a_key_a_forged_end_user_changes_no_phone_cap(
    make_service: ServiceFactory, mode: str
) -> None:
    svc = await make_service(api_auth=mode, api_keys=KEYS, ip_max_phones=2, **OPEN)
    statuses = [
        (
            await svc.request(f"+1212555010{n}", headers={"x-end-user-ip": f"203.0.113.{n}"})
        ).status_code
        for n in range(1, 4)
    ]
    assert statuses == [200, 200, 429]


@pytest.mark.parametrize(
    "value",
    ["not-an-ip", "", "198.51.100.7, 198.51.100.8", "198.51.100.0/24", "999.1.2.3", "::g"],
)
async def test_an_end_user_that_is_no_address_is_400(
    make_service: ServiceFactory, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, api_auth="optional", api_keys=KEYS, **OPEN)
    caplog.set_level(logging.INFO, logger="otpgate.access")
    answer = await svc.request(PHONE, headers=bearer(PLAIN_KEY) | {"x-end-user-ip": value})
    assert answer.status_code == 400
    assert answer.json() == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": "X-End-User-IP must be one IPv4 or IPv6 address.",
        "code": "invalid_end_user_ip",
    }
    assert sender.sent == []
    [line] = access_lines(caplog)
    assert (line.code, line.api_key_name) == ("invalid_end_user_ip", "ci")


async def test_two_end_users_in_one_request_are_400(make_service: ServiceFactory) -> None:
    svc = await make_service(api_auth="optional", api_keys=KEYS, **OPEN)
    headers = [
        ("authorization", f"Bearer {PLAIN_KEY}"),
        ("x-end-user-ip", "198.51.100.7"),
        ("x-end-user-ip", "198.51.100.8"),
    ]
    answer = await svc.request(PHONE, headers=headers)
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_end_user_ip")


# --- no key in any log line ------------------------------------------------------------------


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """configure_logging replaces the root handlers; put the test runner's back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def key_forms(key: str) -> list[str]:
    """A key as it might leak: itself, a long piece of it, its digest."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return [key, key[:16], key[-16:], digest, digest.upper()]


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_no_key_in_any_log_line_at_debug(
    make_service: ServiceFactory,
    capfd: pytest.CaptureFixture[str],
    logging_restored: None,
    log_format: str,
) -> None:
    configure_logging("debug", json_lines=log_format == "json")
    sender = CapturingSender()
    svc = await make_service(sender=sender, api_auth="required", api_keys=KEYS, **OPEN)
    end_user = {"x-end-user-ip": "198.51.100.7"}
    statuses = [(await svc.request(PHONE, headers=bearer(PLAIN_KEY) | end_user)).status_code]
    code = sender.last_code(PHONE)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for key, sent in [
        (HASHED_KEY, wrong),
        (PLAIN_KEY, code),
    ]:
        statuses.append((await svc.verify(PHONE, sent, headers=bearer(key))).status_code)
    for headers in [
        bearer(WRONG_KEY),
        {"authorization": f"Basic {PLAIN_KEY}"},
        bearer(PLAIN_KEY) | {"x-end-user-ip": "x"},
        {},
    ]:
        statuses.append((await svc.request(PHONE, headers=headers)).status_code)
    assert statuses == [200, 400, 200, 401, 401, 400, 401]

    captured = capfd.readouterr()
    text = captured.err + captured.out
    # The capture saw every request's line, with the key's name where there was one.
    assert text.count("/api/v1/request-otp") >= 5 and text.count("/api/v1/verify-otp") >= 2
    if log_format == "json":
        lines = [orjson.loads(line) for line in captured.err.splitlines() if line.strip()]
        names = [line.get("api_key_name") for line in lines if line["logger"] == "otpgate.access"]
        assert names == ["ci", "web", "ci", None, None, "ci", None]
    else:
        assert "api_key_name=ci" in text and "api_key_name=web" in text
    for key in (PLAIN_KEY, HASHED_KEY, WRONG_KEY):
        for form in key_forms(key):
            assert form not in text, "an API key appears in the logs"
    assert "Bearer" not in text and "authorization" not in text.lower()


# --- OpenAPI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["off", "optional", "required"])
async def test_the_document_says_how_to_authenticate(
    make_service: ServiceFactory, mode: str
) -> None:
    svc = await make_service(api_auth=mode, api_keys=KEYS)
    served = (await svc.client.get("/openapi.json")).json()
    assert served == build_openapi(verify_body_model(6), auth_required=mode == "required")
    assert served["components"]["securitySchemes"]["apiKey"]["type"] == "http"
    assert served["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    expected = [{"apiKey": []}] if mode == "required" else [{"apiKey": []}, {}]
    for path in ("/api/v1/request-otp", "/api/v1/verify-otp"):
        operation = served["paths"][path]["post"]
        assert operation["security"] == expected
        unauthorized = operation["responses"]["401"]
        assert "`invalid_api_key`" in unauthorized["description"]
        assert unauthorized["headers"]["WWW-Authenticate"]["required"] is True
        media = unauthorized["content"]["application/json"]
        assert media["examples"]["invalid_api_key"]["value"] == unauthorized_body(INVALID)
        assert "`invalid_end_user_ip`" in operation["responses"]["400"]["description"]
        assert "X-End-User-IP" in [p["name"] for p in operation["parameters"]]
    # Operations routes take no key.
    assert all("security" not in served["paths"][p]["get"] for p in ("/health", "/ready"))


# --- served by `otpgate serve`, on its own protocol and on uvicorn's -------------------------


@pytest.fixture
def keyed_server(tmp_path: Path, fast_path: bool) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(
        tmp_path,
        FAST_PATH=str(fast_path).lower(),
        API_AUTH="required",
        API_KEYS=KEYS,
        LOG_LEVEL="debug",
        LOG_FORMAT="json",
        RATE_LIMIT_MAX_REQUESTS="1000",
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.mark.integration
def test_served_keys_are_checked_and_never_logged(keyed_server: ServiceProcess) -> None:
    base = keyed_server.base
    body = {"phoneNumber": PHONE}
    with httpx.Client(base_url=base, timeout=10) as client:
        missing = client.post("/api/v1/request-otp", json=body)
        wrong = client.post("/api/v1/request-otp", json=body, headers=bearer(WRONG_KEY))
        plain = client.post("/api/v1/request-otp", json=body, headers=bearer(PLAIN_KEY))
        hashed = client.post(
            "/api/v1/verify-otp",
            json={"phoneNumber": PHONE, "otp": "000000"},
            headers=bearer(HASHED_KEY) | {"x-end-user-ip": "198.51.100.7", "x-request-id": "last"},
        )
        health = client.get("/health")
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["message"] == MISSING and wrong.json()["message"] == INVALID
    assert missing.headers["www-authenticate"] == wrong.headers["www-authenticate"] == "Bearer"
    assert plain.status_code == 200
    assert hashed.status_code in (200, 400)  # 200 only if the code really was 000000
    assert health.status_code == 200
    # The last request's access line, then everything the process wrote.
    keyed_server.wait_for_line(lambda line: '"request_id":"last"' in line)
    output = keyed_server.stop()
    access = [
        orjson.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and '"otpgate.access"' in line
    ]
    api = [line for line in access if line["route"].startswith("/api/")]
    assert [(line["status"], line.get("api_key_name")) for line in api] == [
        (401, None),
        (401, None),
        (200, "ci"),
        (hashed.status_code, "web"),
    ]
    assert api[-1]["end_user_ip"] == "198.51.100.7"
    for key in (PLAIN_KEY, HASHED_KEY, WRONG_KEY):
        for form in key_forms(key):
            assert form not in output, "an API key appears in the service's output"
