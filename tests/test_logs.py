"""What the logs say, and above all what they never say.

These tests install the service's real logging set-up and capture everything it
writes (file descriptor level), so a leak through any logger, a library's
included, is caught.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from otpgate.delivery.sns import SnsSender
from otpgate.domain.codes import CodeHasher
from otpgate.http.app import create_app
from otpgate.observability.logs import configure_logging
from otpgate.wiring import build_components, sns_config
from tests.conftest import HASH_SECRET, make_settings
from tests.fakes import FailingSender
from tests.sns_emulator import SnsEmulator

AWS_KEY_ID = "AKIAOTPGATELOGTEST01"
AWS_SECRET = "otpgate/LogTest+Secret0123456789abcdefXYZ"


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


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def access_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("logger") == "otpgate.access"]


def contains_code(text: str, code: str) -> bool:
    """The code as a number of its own, not digits inside a longer one (a timestamp)."""
    return re.search(rf"(?<![0-9]){code}(?![0-9])", text) is not None


def forbidden_forms(phone: str, code: str) -> dict[str, str]:
    digest = CodeHasher(HASH_SECRET.encode()).digest(phone, code)
    return {
        "hash (hex)": digest.hex(),
        "hash (HEX)": digest.hex().upper(),
        "hash (base64)": base64.b64encode(digest).decode().rstrip("="),
        "hash (base64url)": base64.urlsafe_b64encode(digest).decode().rstrip("="),
        "hash (bytes repr)": repr(digest)[2:30],
        "OTP_HASH_SECRET": HASH_SECRET,
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "phone (E.164)": phone,
        "phone (digits)": phone.lstrip("+"),
    }


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_full_flow_at_debug_logs_no_secret(
    log_format: str,
    store_settings: dict[str, Any],
    sns_emulator: SnsEmulator,
    sns_settings: dict[str, Any],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    logging_restored: None,
    fast_path: bool,
) -> None:
    """Request, wrong code, right code, replay: the real SNS client, both stores, DEBUG."""
    phone = "+12125550147"
    settings = make_settings(
        tmp_path,
        **store_settings,
        fast_path=fast_path,
        **{**sns_settings, "aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET},
        log_level="debug",
        log_format=log_format,
    )
    configure_logging(settings.log_level, json_lines=settings.log_json)
    components = build_components(settings, sender=SnsSender(sns_config(settings)))
    transport = httpx.ASGITransport(app=create_app(components))
    async with httpx.AsyncClient(transport=transport, base_url="http://otpgate.test") as client:
        sent = await client.post("/api/v1/request-otp", json={"phoneNumber": phone})
        assert sent.status_code == 200, sent.text
        message = sns_emulator.last_message(phone)["message"]
        code = re.findall(r"\b(\d{6})\b", message)[-1]
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        bad = await client.post("/api/v1/verify-otp", json={"phoneNumber": phone, "otp": wrong})
        good = await client.post("/api/v1/verify-otp", json={"phoneNumber": phone, "otp": code})
        again = await client.post("/api/v1/verify-otp", json={"phoneNumber": phone, "otp": code})
    await components.close()
    assert [bad.status_code, good.status_code, again.status_code] == [400, 200, 400]

    captured = capfd.readouterr()
    text = captured.err + captured.out
    assert "/api/v1/verify-otp" in text, "the capture missed the access lines"
    assert not contains_code(text, code), "the code appears in the logs"
    assert not contains_code(text, wrong), "a guessed code appears in the logs"
    for what, value in forbidden_forms(phone, code).items():
        assert value not in text, f"{what} appears in the logs"
    assert "+1212***0147" in text, "the phone should appear masked"
    assert "Traceback" not in text

    if log_format == "json":
        lines = json_lines(captured.err)
        assert not [line for line in lines if line["level"] in ("error", "critical")]
        # The wrong code is exactly one line at info or above: its access line.
        wrong_id = bad.headers["x-request-id"]
        loud = [
            line
            for line in lines
            if line.get("request_id") == wrong_id and line["level"] not in ("debug",)
        ]
        assert len(loud) == 1
        assert loud[0]["logger"] == "otpgate.access"
        assert loud[0]["level"] == "info"
        assert loud[0]["code"] == "invalid_code"


async def test_access_line_per_request(
    make_service: Any,
    capfd: pytest.CaptureFixture[str],
    logging_restored: None,
) -> None:
    configure_logging("info", json_lines=True)
    svc = await make_service()
    response = await svc.request("+12125550148", headers={"X-Request-ID": "req-abc.123"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-abc.123"
    missing = await svc.client.get("/wp-login.php?user=admin")
    assert missing.status_code == 404

    lines = access_lines(json_lines(capfd.readouterr().err))
    assert len(lines) == 2
    sent, scan = lines
    assert sent["request_id"] == "req-abc.123"
    assert sent["method"] == "POST"
    assert sent["route"] == "/api/v1/request-otp"
    assert sent["status"] == 200
    assert sent["client_ip"] == "127.0.0.1"
    assert isinstance(sent["duration_ms"], float)
    assert sent["duration_ms"] >= 0
    assert isinstance(sent["time"], float)
    assert sent["level"] == "info"
    # Unknown paths share one route label; the raw path (and its query) is not logged.
    assert scan["route"] == "other"
    assert scan["code"] == "not_found"
    assert "wp-login" not in orjson.dumps(scan).decode()


@pytest.mark.parametrize(
    "incoming",
    [None, "", "has space", "x" * 129, "caf\u00e9"],
    ids=["absent", "empty", "space", "too-long", "non-ascii"],
)
async def test_unusable_request_id_is_replaced(
    incoming: str | None,
    make_service: Any,
    capfd: pytest.CaptureFixture[str],
    logging_restored: None,
) -> None:
    configure_logging("info", json_lines=True)
    svc = await make_service()
    headers = {} if incoming is None else {"X-Request-ID": incoming.encode("utf-8")}
    response = await svc.client.get("/health", headers=headers)
    generated = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)
    other = await svc.client.get("/health", headers=headers)
    assert other.headers["x-request-id"] != generated


async def test_request_id_joins_a_requests_lines(
    make_service: Any,
    capfd: pytest.CaptureFixture[str],
    logging_restored: None,
) -> None:
    configure_logging("info", json_lines=True)
    # A store that cannot be reached makes one request write several lines.
    svc = await make_service(redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.2)
    await svc.request("+12125550149", headers={"X-Request-ID": "join-me"})
    lines = json_lines(capfd.readouterr().err)
    loggers = {line["logger"] for line in lines if line.get("request_id") == "join-me"}
    assert {"otpgate.store.redis", "otpgate.access"} <= loggers


async def test_text_format_is_readable(
    make_service: Any,
    capfd: pytest.CaptureFixture[str],
    logging_restored: None,
) -> None:
    configure_logging("info", json_lines=False)
    svc = await make_service()
    await svc.client.get("/nope", headers={"X-Request-ID": "text-1"})
    line = capfd.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO +otpgate\.access: request ", line)
    assert "request_id=text-1" in line
    assert "route=other" in line
    assert "status=404" in line


async def test_log_level_is_obeyed(
    make_service: Any,
    capfd: pytest.CaptureFixture[str],
    logging_restored: None,
) -> None:
    svc = await make_service()
    configure_logging("warning", json_lines=True)
    await svc.request("+12125550150")
    await svc.verify("+12125550150", "000000")
    assert capfd.readouterr().err == ""

    configure_logging("debug", json_lines=True)
    await svc.client.get("/health")
    lines = json_lines(capfd.readouterr().err)
    # Probe successes are logged, but only at DEBUG.
    assert [(line["logger"], line["level"]) for line in lines] == [("otpgate.access", "debug")]


async def test_access_log_can_be_turned_off(
    make_service: Any,
    capfd: pytest.CaptureFixture[str],
    logging_restored: None,
) -> None:
    svc = await make_service(access_log=False)
    configure_logging("info", json_lines=True)
    response = await svc.client.get("/nope")
    assert "x-request-id" in response.headers
    assert access_lines(json_lines(capfd.readouterr().err)) == []


async def test_unexpected_error_is_500_with_request_id(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    logging_restored: None,
    fast_path: bool,
) -> None:
    """A bug answers 500, is logged with its trace, and the lines share the request id."""
    configure_logging("info", json_lines=True)
    settings = make_settings(tmp_path, fast_path=fast_path)
    components = build_components(settings, sender=FailingSender(RuntimeError("bug")))
    transport = httpx.ASGITransport(app=create_app(components), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://otpgate.test") as client:
        response = await client.post(
            "/api/v1/request-otp",
            json={"phoneNumber": "+12125550151"},
            headers={"X-Request-ID": "boom-1"},
        )
    await components.close()
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert response.headers["x-request-id"] == "boom-1"
    lines = [line for line in json_lines(capfd.readouterr().err) if line.get("request_id")]
    by_logger = {line["logger"]: line for line in lines}
    assert by_logger["otpgate.http"]["level"] == "error"
    assert "RuntimeError" in by_logger["otpgate.http"]["exc"]
    assert by_logger["otpgate.access"]["status"] == 500
    assert by_logger["otpgate.access"]["level"] == "warning"
    assert {line["request_id"] for line in lines} == {"boom-1"}


async def test_access_line_names_the_client_the_limit_counted(
    make_service: Any,
    capfd: pytest.CaptureFixture[str],
    logging_restored: None,
) -> None:
    # Behind a trusted proxy, the API routes and the rest resolve the forwarded address.
    configure_logging("info", json_lines=True)
    svc = await make_service(trusted_proxies="127.0.0.0/8")
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    assert (await svc.verify("+12125550149", "000000", headers=forwarded)).status_code == 400
    assert (await svc.client.get("/nope", headers=forwarded)).status_code == 404
    lines = access_lines(json_lines(capfd.readouterr().err))
    assert [(line["route"], line["client_ip"]) for line in lines] == [
        ("/api/v1/verify-otp", "203.0.113.9"),
        ("other", "203.0.113.9"),
    ]


async def test_a_refused_request_names_its_phone_masked(
    make_service: Any,
    capfd: pytest.CaptureFixture[str],
    logging_restored: None,
) -> None:
    """Refusals are what an operator looks into: their access line names the number too."""
    configure_logging("info", json_lines=True)
    svc = await make_service(allowed_countries="GB")
    assert (await svc.request("+12125550146")).json()["code"] == "country_not_allowed"
    assert (await svc.verify("+442071838750", "000000")).json()["code"] == "invalid_code"
    assert (await svc.request("+1999")).json()["code"] == "invalid_phone_number"
    lines = access_lines(json_lines(capfd.readouterr().err))
    assert [(line["code"], line.get("phone")) for line in lines] == [
        ("country_not_allowed", "+1212***0146"),
        ("invalid_code", "+4420***8750"),
        ("invalid_phone_number", None),  # nothing parsed, so nothing to name
    ]


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
async def test_an_email_verification_names_its_address_as_email(
    make_service: Any,
    capfd: pytest.CaptureFixture[str],
    logging_restored: None,
    as_json: bool,
) -> None:
    """A masked address is not a phone: its access line says ``email``."""
    configure_logging("info", json_lines=as_json)
    svc = await make_service()
    wrong = await svc.client.post(
        "/api/v1/verify-otp", json={"email": "jane@example.com", "otp": "000000"}
    )
    assert wrong.json()["code"] == "invalid_code"
    assert (await svc.verify("+12125550146", "000000")).json()["code"] == "invalid_code"
    err = capfd.readouterr().err
    if as_json:
        lines = access_lines(json_lines(err))
        assert [(line.get("email"), line.get("phone")) for line in lines] == [
            ("j***@example.com", None),
            (None, "+1212***0146"),
        ]
    else:
        email_line, phone_line = [line for line in err.splitlines() if "verify-otp" in line]
        assert "email=j***@example.com" in email_line and "phone=" not in email_line
        assert "phone=+1212***0146" in phone_line and "email=" not in phone_line
