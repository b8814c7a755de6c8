"""The webhook provider against a real local receiver that checks every signature.

The receiver is an HTTP server started here. It verifies the HMAC signature the
way a team's receiver would (recomputed independently, not with the service's
code) and answers 401 when it does not match; each test scripts its other answers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import orjson
import pytest

from tests.conftest import Service, ServiceFactory
from tests.http_stub import HANG, Received, Reply, StubServer
from tests.test_sns_delivery import assert_error, assert_no_code_stored

PHONE = "+12125550177"
SECRET = "receiver-shared-secret-0123456789abcdef"


@pytest.fixture
def fast_path() -> bool:
    """Fast paths on only: the webhook sender has none of its own, and the HTTP answers
    these tests see are checked in both modes by the API and SNS delivery tests."""
    return True


READ_TIMEOUT = 0.5
RETRY_SECONDS = 2.0


def signature_ok(request: Received, secret: str = SECRET) -> bool:
    timestamp = request.headers.get("x-otpgate-timestamp", "")
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    given = request.headers.get("x-otpgate-signature", "")
    fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
    return fresh and hmac.compare_digest(given, f"sha256={expected}")


def payload(request: Received) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(request.body)
    return data


def code_in(request: Received) -> str:
    match = re.search(r"\b(\d{6})\b", payload(request)["message"])
    assert match, "no code in the webhook payload"
    return match.group(1)


def accepted(message_id: str | None = "vendor-msg-1") -> Reply:
    if message_id is None:
        return Reply(204)
    return Reply(202, orjson.dumps({"messageId": message_id}), {"content-type": "application/json"})


def receiver(stub: StubServer, script: Callable[[Received], Any], secret: str = SECRET) -> None:
    """Answer 401 to a bad signature, else whatever ``script`` says."""
    stub.respond = lambda r: script(r) if signature_ok(r, secret) else Reply(401)


def webhook_at(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "sms_provider": "webhook",
        "sms_webhook_url": f"{url}/sms",
        "sms_webhook_secret": SECRET,
        "sms_connect_timeout_seconds": 0.5,
        "sms_read_timeout_seconds": READ_TIMEOUT,
        "sms_retry_max_attempts": 3,
        "sms_retry_max_seconds": RETRY_SECONDS,
        "otp_resend_cooldown_seconds": 60,
        "phone_send_limit": 1,
        "rate_limit_max_requests": 100,
        **overrides,
    }


async def assert_can_ask_again_at_once(service: Service, stub: StubServer) -> None:
    receiver(stub, lambda _: accepted())
    before = stub.count
    response = await service.request(PHONE)
    assert response.status_code == 200, response.text
    assert stub.count == before + 1
    assert (await service.verify(PHONE, code_in(stub.received[-1]))).status_code == 200


async def test_delivers_a_signed_json_payload(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    receiver(stub_server, lambda _: accepted("vendor-msg-1"))
    service = await make_service(real_sender=True, **webhook_at(stub_server.url))
    response = await service.request(PHONE)
    assert response.status_code == 200, response.text
    assert response.json()["messageId"] == "vendor-msg-1"
    [request] = stub_server.received
    assert signature_ok(request)
    assert request.path == "/sms"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("otpgate/")
    body = payload(request)
    # The fields an SMS always had, and the channel (every channel has the same fields).
    assert set(body) == {"phoneNumber", "message", "idempotencyKey", "channel"}
    assert body["channel"] == "sms"
    assert body["phoneNumber"] == PHONE
    assert body["idempotencyKey"] == request.headers["idempotency-key"]
    assert (await service.verify(PHONE, code_in(request))).status_code == 200


async def test_without_a_message_id_the_idempotency_key_stands_in(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    receiver(stub_server, lambda _: accepted(None))
    service = await make_service(real_sender=True, **webhook_at(stub_server.url))
    response = await service.request(PHONE)
    assert response.status_code == 200
    assert response.json()["messageId"] == payload(stub_server.received[0])["idempotencyKey"]


async def test_each_send_has_its_own_idempotency_key(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    receiver(stub_server, lambda _: accepted())
    service = await make_service(
        real_sender=True, **webhook_at(stub_server.url, otp_resend_cooldown_seconds=0)
    )
    await service.request(PHONE)
    await service.request("+12125550178")
    keys = {payload(r)["idempotencyKey"] for r in stub_server.received}
    assert len(keys) == 2


async def test_wrong_secret_is_502_logged_once_and_not_ready(
    make_service: ServiceFactory, stub_server: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    receiver(stub_server, lambda _: accepted(), secret="the-receiver-expects-another-secret")
    service = await make_service(real_sender=True, **webhook_at(stub_server.url))
    sender = service.components.sender
    with caplog.at_level(logging.DEBUG, logger="otpgate"):
        for _ in range(3):
            assert_error(await service.request(PHONE), 502, "sms_provider_error")
            await assert_no_code_stored(service, PHONE)
    assert stub_server.count == 3  # never retried
    assert sender.problem == "webhook: HTTP 401"
    ready = await service.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["reasons"] == ["sms provider (webhook): webhook: HTTP 401"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "the cause is logged once, not on every request"
    assert errors[0].name == "otpgate.sms.webhook"
    assert "HTTP 401" in errors[0].getMessage()
    assert SECRET not in caplog.text
    await assert_can_ask_again_at_once(service, stub_server)
    assert sender.problem is None
    assert (await service.client.get("/ready")).status_code == 200


@pytest.mark.parametrize("status", [403, 404, 405, 302])
async def test_configuration_errors_are_502(
    make_service: ServiceFactory, stub_server: StubServer, status: int
) -> None:
    headers = {"location": "http://127.0.0.1:9/elsewhere"} if status == 302 else {}
    receiver(stub_server, lambda _: Reply(status, b"", headers))
    service = await make_service(real_sender=True, **webhook_at(stub_server.url))
    assert_error(await service.request(PHONE), 502, "sms_provider_error")
    assert stub_server.count == 1  # a redirect is not followed
    assert service.components.sender.problem == f"webhook: HTTP {status}"
    await assert_no_code_stored(service, PHONE)
    await assert_can_ask_again_at_once(service, stub_server)


@pytest.mark.parametrize("status", [400, 422])
async def test_number_refused_is_400(
    make_service: ServiceFactory, stub_server: StubServer, status: int
) -> None:
    receiver(
        stub_server,
        lambda _: Reply(
            status, b'{"error":"invalid number"}', {"content-type": "application/json"}
        ),
    )
    service = await make_service(real_sender=True, **webhook_at(stub_server.url))
    assert_error(await service.request(PHONE), 400, "sms_number_rejected")
    assert stub_server.count == 1
    assert service.components.sender.problem is None
    await assert_no_code_stored(service, PHONE)
    await assert_can_ask_again_at_once(service, stub_server)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 408])
async def test_busy_receiver_is_retried_then_503(
    make_service: ServiceFactory, stub_server: StubServer, status: int
) -> None:
    receiver(stub_server, lambda _: Reply(status))
    service = await make_service(real_sender=True, **webhook_at(stub_server.url))
    started = time.monotonic()
    response = await service.request(PHONE)
    assert time.monotonic() - started < 5 * RETRY_SECONDS
    assert_error(response, 503, "sms_provider_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    assert stub_server.count == 3
    keys = {r.headers["idempotency-key"] for r in stub_server.received}
    assert len(keys) == 1  # one send, one key, however many tries
    await assert_no_code_stored(service, PHONE)
    await assert_can_ask_again_at_once(service, stub_server)


async def test_retry_after_is_honoured(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    replies = iter([Reply(429, headers={"retry-after": "1"})])
    receiver(stub_server, lambda _: next(replies, accepted()))
    service = await make_service(real_sender=True, **webhook_at(stub_server.url))
    started = time.monotonic()
    response = await service.request(PHONE)
    waited = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert stub_server.count == 2
    assert waited >= 1.0  # the receiver asked for a second; the usual backoff is shorter
    first, second = stub_server.received
    assert first.body == second.body  # same payload, same key, freshly signed
    assert signature_ok(second)


@pytest.mark.parametrize("retry_after", ["120", "http-date"])
async def test_retry_after_beyond_the_budget_is_passed_to_the_client(
    make_service: ServiceFactory, stub_server: StubServer, retry_after: str
) -> None:
    value = formatdate(time.time() + 120, usegmt=True) if retry_after == "http-date" else "120"
    receiver(stub_server, lambda _: Reply(429, headers={"retry-after": value}))
    service = await make_service(real_sender=True, **webhook_at(stub_server.url))
    response = await service.request(PHONE)
    assert_error(response, 503, "sms_provider_unavailable")
    assert 110 <= int(response.headers["retry-after"]) <= 121
    assert stub_server.count == 1  # no point trying again inside the budget
    await assert_no_code_stored(service, PHONE)
    await assert_can_ask_again_at_once(service, stub_server)


async def test_read_timeout_is_retried_with_the_same_key(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    """The idempotency key makes a repeat safe: the receiver can drop it if it got both."""
    replies = iter([HANG])
    receiver(stub_server, lambda _: next(replies, accepted()))
    service = await make_service(real_sender=True, **webhook_at(stub_server.url))
    response = await service.request(PHONE)
    assert response.status_code == 200, response.text
    first, second = stub_server.received
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert (await service.verify(PHONE, code_in(second))).status_code == 200


async def test_receiver_that_never_answers_is_503_within_the_bound(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    receiver(stub_server, lambda _: HANG)
    service = await make_service(
        real_sender=True, **webhook_at(stub_server.url, sms_retry_max_seconds=1.0)
    )
    started = time.monotonic()
    response = await service.request(PHONE)
    elapsed = time.monotonic() - started
    assert_error(response, 503, "sms_provider_unavailable")
    assert READ_TIMEOUT <= elapsed < 5 * (1.0 + READ_TIMEOUT)
    assert 1 <= stub_server.count <= 3
    await assert_no_code_stored(service, PHONE)
    await assert_can_ask_again_at_once(service, stub_server)


async def test_connection_refused_is_503(make_service: ServiceFactory, refused_url: str) -> None:
    service = await make_service(
        real_sender=True, **webhook_at(refused_url, sms_retry_max_attempts=2)
    )
    assert_error(await service.request(PHONE), 503, "sms_provider_unavailable")
    await assert_no_code_stored(service, PHONE)
    assert_error(await service.request(PHONE), 503, "sms_provider_unavailable")  # not 429


async def test_connect_timeout_is_503_within_the_bound(
    make_service: ServiceFactory, unanswered_url: str
) -> None:
    service = await make_service(
        real_sender=True,
        **webhook_at(unanswered_url, sms_retry_max_attempts=2, sms_retry_max_seconds=1.0),
    )
    started = time.monotonic()
    response = await service.request(PHONE)
    assert time.monotonic() - started < 5 * 1.5
    assert_error(response, 503, "sms_provider_unavailable")
    await assert_no_code_stored(service, PHONE)
    assert_error(await service.request(PHONE), 503, "sms_provider_unavailable")  # not 429
