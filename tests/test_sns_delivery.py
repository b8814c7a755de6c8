"""SNS delivery against the real client: every failure it can meet, end to end.

The client (aiobotocore) talks to a local stub that answers Publish with the AWS
error document of the case under test, to a port that refuses or never answers,
or to the SNS emulator. Each failure test checks the HTTP answer, that no code
is left stored, and that neither the cooldown nor the send quota was charged:
the same number asks again at once and gets a code that verifies.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import httpx
import pytest

from otpgate.domain.limits import Lockout
from tests.conftest import STOCK_ON_SQLITE_ONLY, Service, ServiceFactory
from tests.http_stub import HANG, Received, Reply, StubServer, aws_error, publish_ok
from tests.sns_emulator import SnsEmulator

# Both ways to publish (aiobotocore's own when FAST_PATH=false); the stores differ in
# nothing the publish path does, so the stock one runs on SQLite only.
pytestmark = STOCK_ON_SQLITE_ONLY

PHONE = "+12125550142"
OPTED_OUT = "+12125550199"  # the emulator reports numbers ending in 99 as opted out

READ_TIMEOUT = 0.5
CONNECT_TIMEOUT = 0.5
RETRY_SECONDS = 2.0


def opt_out_status(*, opted_out: bool) -> Reply:
    body = (
        '<CheckIfPhoneNumberIsOptedOutResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
        f"<CheckIfPhoneNumberIsOptedOutResult><isOptedOut>{str(opted_out).lower()}</isOptedOut>"
        "</CheckIfPhoneNumberIsOptedOutResult>"
        "<ResponseMetadata><RequestId>stub-request</RequestId></ResponseMetadata>"
        "</CheckIfPhoneNumberIsOptedOutResponse>"
    )
    return Reply(200, body.encode(), {"content-type": "text/xml"})


def sns_at(url: str, **overrides: Any) -> dict[str, Any]:
    """Settings for the real SNS client at ``url``, with tight timeouts and budget.

    One send per window and a cooldown: a charged failure would show as a 429.
    """
    return {
        "sms_provider": "sns",
        "sns_endpoint_url": url,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "aws_region": "us-east-1",
        "sms_connect_timeout_seconds": CONNECT_TIMEOUT,
        "sms_read_timeout_seconds": READ_TIMEOUT,
        "sms_retry_max_attempts": 3,
        "sms_retry_max_seconds": RETRY_SECONDS,
        "otp_resend_cooldown_seconds": 60,
        "phone_send_limit": 1,
        "rate_limit_max_requests": 100,
        **overrides,
    }


def code_in(request: Received) -> str:
    match = re.search(r"\b(\d{6})\b", request.form["Message"])
    assert match, "no code in the published message"
    return match.group(1)


async def assert_no_code_stored(service: Service, phone: str = PHONE) -> None:
    # Counts one attempt, as any look at a code does; far below every lockout threshold.
    attempt = await service.components.store.begin_verify(phone, 300, time.time(), Lockout())
    assert attempt.code_hash is None, "a failed send left its code behind"


async def assert_can_ask_again_at_once(
    service: Service, stub: StubServer, phone: str = PHONE
) -> None:
    """Nothing was charged: with a cooldown and a quota of one, a new send still goes out."""
    stub.respond = lambda _: publish_ok()
    before = stub.count
    response = await service.request(phone)
    assert response.status_code == 200, response.text
    assert stub.count == before + 1
    code = code_in(stub.received[-1])
    assert (await service.verify(phone, code)).status_code == 200


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["statusCode"] == status
    return body


# -- throttling: retried with backoff inside the budget, then 503 + Retry-After -------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "Throttling"), (400, "ThrottlingException"), (429, "Throttled"), (429, "SlowDown")],
)
async def test_throttling_is_retried_then_503_with_retry_after(
    make_service: ServiceFactory, stub_server: StubServer, status: int, code: str
) -> None:
    stub_server.respond = lambda _: aws_error(status, code, "Rate exceeded")
    service = await make_service(real_sender=True, **sns_at(stub_server.url))
    started = time.monotonic()
    response = await service.request(PHONE)
    elapsed = time.monotonic() - started
    assert_error(response, 503, "sms_provider_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    assert stub_server.count == 3  # SMS_RETRY_MAX_ATTEMPTS, and botocore added none
    assert elapsed < 5 * RETRY_SECONDS
    await assert_no_code_stored(service)
    await assert_can_ask_again_at_once(service, stub_server)


async def test_throttling_that_clears_within_the_budget_is_invisible(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    replies = iter([aws_error(400, "Throttling"), aws_error(429, "Throttled")])
    stub_server.respond = lambda _: next(replies, publish_ok())
    service = await make_service(real_sender=True, **sns_at(stub_server.url))
    response = await service.request(PHONE)
    assert response.status_code == 200, response.text
    assert stub_server.count == 3
    # All three tries carried the same code: a retry resends, it does not re-issue.
    assert len({code_in(r) for r in stub_server.received}) == 1
    assert (await service.verify(PHONE, code_in(stub_server.received[-1]))).status_code == 200


async def test_retries_stop_at_the_time_budget(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    stub_server.respond = lambda _: aws_error(400, "Throttling")
    budget = 0.6
    service = await make_service(
        real_sender=True,
        **sns_at(stub_server.url, sms_retry_max_attempts=10, sms_retry_max_seconds=budget),
    )
    started = time.monotonic()
    response = await service.request(PHONE)
    elapsed = time.monotonic() - started
    assert_error(response, 503, "sms_provider_unavailable")
    assert 2 <= stub_server.count < 10  # retried, then stopped by time, not by count
    assert elapsed < 5 * budget
    await assert_no_code_stored(service)
    await assert_can_ask_again_at_once(service, stub_server)


# -- 5xx: transient, retried like throttling ------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"), [(500, "InternalError"), (503, "ServiceUnavailable"), (502, "")]
)
async def test_server_errors_are_retried_then_503(
    make_service: ServiceFactory, stub_server: StubServer, status: int, code: str
) -> None:
    stub_server.respond = lambda _: aws_error(status, code)
    service = await make_service(
        real_sender=True, **sns_at(stub_server.url, sms_retry_max_attempts=2)
    )
    response = await service.request(PHONE)
    assert_error(response, 503, "sms_provider_unavailable")
    assert "retry-after" in response.headers
    assert stub_server.count == 2
    await assert_no_code_stored(service)
    await assert_can_ask_again_at_once(service, stub_server)


# -- the number refused: 400 with a machine code, never retried ------------------------------


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("InvalidParameter", "Invalid parameter: PhoneNumber Reason: +12125550142 is not valid"),
        ("ParameterValueInvalid", "Invalid parameter: PhoneNumber"),
        ("InvalidParameter", ""),
    ],
)
async def test_number_refused_is_400(
    make_service: ServiceFactory, stub_server: StubServer, code: str, message: str
) -> None:
    stub_server.respond = lambda _: aws_error(400, code, message)
    service = await make_service(real_sender=True, **sns_at(stub_server.url))
    response = await service.request(PHONE)
    assert_error(response, 400, "sms_number_rejected")
    assert "retry-after" not in response.headers
    assert stub_server.count == 1
    assert service.components.sender.problem is None
    await assert_no_code_stored(service)
    await assert_can_ask_again_at_once(service, stub_server)


async def test_invalid_parameter_about_our_request_is_502(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    stub_server.respond = lambda _: aws_error(
        400, "InvalidParameter", "Invalid parameter: MessageAttributes"
    )
    service = await make_service(real_sender=True, **sns_at(stub_server.url))
    assert_error(await service.request(PHONE), 502, "sms_provider_error")
    assert stub_server.count == 1
    await assert_no_code_stored(service)
    await assert_can_ask_again_at_once(service, stub_server)


# -- credentials: 502, logged once with the cause, readiness turns false -------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (403, "AuthorizationError"),
        (403, "InvalidClientTokenId"),
        (403, "SignatureDoesNotMatch"),
        (400, "ExpiredToken"),
    ],
)
async def test_credentials_refused_is_502_and_not_ready(
    make_service: ServiceFactory,
    stub_server: StubServer,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
) -> None:
    stub_server.respond = lambda _: aws_error(
        status, code, "User: arn:aws:iam::123456789012:user/otp is not authorized"
    )
    service = await make_service(real_sender=True, **sns_at(stub_server.url))
    sender = service.components.sender
    assert (await service.client.get("/ready")).status_code == 200
    with caplog.at_level(logging.DEBUG, logger="otpgate"):
        for _ in range(3):
            assert_error(await service.request(PHONE), 502, "sms_provider_error")
            await assert_no_code_stored(service)
    assert stub_server.count == 3  # never retried
    assert sender.problem == f"sns: {code}"
    ready = await service.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["reasons"] == [f"sms provider (sns): sns: {code}"]
    causes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(causes) == 1, "the cause is logged once, not on every request"
    assert causes[0].name == "otpgate.sms.sns"
    assert code in causes[0].getMessage()
    assert "not authorized" in causes[0].getMessage()
    assert "123456789012" not in causes[0].getMessage()  # digit runs are redacted

    # Fixed credentials: the next send succeeds, and readiness recovers with it.
    await assert_can_ask_again_at_once(service, stub_server)
    assert sender.problem is None
    assert (await service.client.get("/ready")).status_code == 200


async def test_missing_credentials_is_502_and_not_ready(
    make_service: ServiceFactory,
    stub_server: StubServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = sns_at(stub_server.url, aws_access_key_id=None, aws_secret_access_key=None)
    service = await make_service(real_sender=True, **settings)
    assert_error(await service.request(PHONE), 502, "sms_provider_error")
    assert stub_server.count == 0
    assert service.components.sender.problem == "sns: no credentials"
    assert (await service.client.get("/ready")).status_code == 503
    await assert_no_code_stored(service)
    # Not charged: asking again fails the same way, not with a cooldown.
    assert_error(await service.request(PHONE), 502, "sms_provider_error")


# -- the network: refused, never connecting, never answering --------------------------------


async def test_connection_refused_is_503_within_the_budget(
    make_service: ServiceFactory, refused_url: str
) -> None:
    service = await make_service(real_sender=True, **sns_at(refused_url, sms_retry_max_attempts=2))
    started = time.monotonic()
    response = await service.request(PHONE)
    elapsed = time.monotonic() - started
    assert_error(response, 503, "sms_provider_unavailable")
    assert "retry-after" in response.headers
    assert elapsed < 5 * RETRY_SECONDS
    await assert_no_code_stored(service)
    # Not charged: the same number is refused by the provider again, not by a cooldown.
    assert_error(await service.request(PHONE), 503, "sms_provider_unavailable")


async def test_connect_timeout_is_503_within_the_bound(
    make_service: ServiceFactory, unanswered_url: str
) -> None:
    service = await make_service(
        real_sender=True,
        **sns_at(unanswered_url, sms_retry_max_attempts=2, sms_retry_max_seconds=1.0),
    )
    started = time.monotonic()
    response = await service.request(PHONE)
    elapsed = time.monotonic() - started
    assert_error(response, 503, "sms_provider_unavailable")
    # Each try gives up after the connect timeout; no try starts after the budget.
    assert CONNECT_TIMEOUT <= elapsed < 5 * (1.0 + CONNECT_TIMEOUT)
    await assert_no_code_stored(service)
    assert_error(await service.request(PHONE), 503, "sms_provider_unavailable")


async def test_read_timeout_is_503_and_not_retried(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    """SNS may have taken a Publish that timed out: a retry could send a second SMS."""
    stub_server.respond = lambda _: HANG
    service = await make_service(real_sender=True, **sns_at(stub_server.url))
    started = time.monotonic()
    response = await service.request(PHONE)
    elapsed = time.monotonic() - started
    assert_error(response, 503, "sms_provider_unavailable")
    assert stub_server.count == 1
    assert READ_TIMEOUT <= elapsed < 5 * READ_TIMEOUT
    await assert_no_code_stored(service)
    await assert_can_ask_again_at_once(service, stub_server)


# -- success paths --------------------------------------------------------------------------


async def test_sms_attributes_come_from_settings(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    stub_server.respond = lambda _: publish_ok()
    service = await make_service(
        real_sender=True,
        **sns_at(
            stub_server.url,
            sns_sms_type="Transactional",
            sns_sms_sender_id="Acme",
            sns_origination_number="+18005550100",
            sns_max_price="0.25",
        ),
    )
    response = await service.request(PHONE)
    assert response.status_code == 200
    assert response.json()["messageId"] == "stub-message-1"
    form = stub_server.received[-1].form
    attributes = {}
    for key, name in form.items():
        match = re.fullmatch(r"MessageAttributes\.entry\.(\d+)\.Name", key)
        if match:
            n = match.group(1)
            attributes[name] = (
                form[f"MessageAttributes.entry.{n}.Value.DataType"],
                form[f"MessageAttributes.entry.{n}.Value.StringValue"],
            )
    assert attributes == {
        "AWS.SNS.SMS.SMSType": ("String", "Transactional"),
        "AWS.SNS.SMS.SenderID": ("String", "Acme"),
        "AWS.MM.SMS.OriginationNumber": ("String", "+18005550100"),
        "AWS.SNS.SMS.MaxPrice": ("Number", "0.25"),
    }
    assert form["PhoneNumber"] == PHONE


async def test_unset_attributes_are_not_sent(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    stub_server.respond = lambda _: publish_ok()
    service = await make_service(real_sender=True, **sns_at(stub_server.url))
    assert (await service.request(PHONE)).status_code == 200
    names = [v for k, v in stub_server.received[-1].form.items() if k.endswith(".Name")]
    assert names == ["AWS.SNS.SMS.SMSType"]


async def test_missing_message_id_still_succeeds(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    stub_server.respond = lambda _: publish_ok(message_id=None)
    service = await make_service(real_sender=True, **sns_at(stub_server.url))
    response = await service.request(PHONE)
    assert response.status_code == 200
    assert response.json()["messageId"]
    code = code_in(stub_server.received[-1])
    assert (await service.verify(PHONE, code)).status_code == 200


async def test_emulator_delivers_with_the_real_client(
    make_service: ServiceFactory, sns_emulator: SnsEmulator, sns_settings: dict[str, Any]
) -> None:
    service = await make_service(real_sender=True, **sns_settings, sms_webotp_domain="example.com")
    response = await service.request(PHONE)
    assert response.status_code == 200, response.text
    sms = sns_emulator.last_message(PHONE)
    assert sms["message_id"] == response.json()["messageId"]
    code = re.search(r"#(\d{6})$", sms["message"])
    assert code, sms["message"]
    assert (await service.verify(PHONE, code.group(1))).status_code == 200


# -- opt-out check ---------------------------------------------------------------------------


async def test_opted_out_number_gets_400_and_no_sms(
    make_service: ServiceFactory, sns_emulator: SnsEmulator, sns_settings: dict[str, Any]
) -> None:
    service = await make_service(
        real_sender=True,
        **sns_settings,
        sns_check_opt_out=True,
        phone_send_limit=1,
        rate_limit_max_requests=100,
    )
    sent_before = len(sns_emulator.messages())
    response = await service.request(OPTED_OUT)
    body = assert_error(response, 400, "sms_number_opted_out")
    assert "opted out" in body["message"]
    assert len(sns_emulator.messages()) == sent_before
    await assert_no_code_stored(service, OPTED_OUT)
    # Not charged either: asking again reaches the check again (and is refused again).
    assert_error(await service.request(OPTED_OUT), 400, "sms_number_opted_out")
    # A number that has not opted out is checked and then sent to.
    assert (await service.request(PHONE)).status_code == 200
    assert sns_emulator.last_message(PHONE)


async def test_opt_out_check_is_off_by_default(
    make_service: ServiceFactory, sns_emulator: SnsEmulator, sns_settings: dict[str, Any]
) -> None:
    service = await make_service(real_sender=True, **sns_settings)
    assert (await service.request(OPTED_OUT)).status_code == 200


async def test_opt_out_check_failures_map_like_publish(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    check_reply = aws_error(429, "Throttled")

    def respond(request: Received) -> Reply:
        if request.form["Action"] == "CheckIfPhoneNumberIsOptedOut":
            return check_reply
        return publish_ok()

    stub_server.respond = respond
    service = await make_service(
        real_sender=True,
        **sns_at(stub_server.url, sns_check_opt_out=True, sms_retry_max_attempts=2),
    )
    assert_error(await service.request(PHONE), 503, "sms_provider_unavailable")
    actions = [r.form["Action"] for r in stub_server.received]
    assert actions == ["CheckIfPhoneNumberIsOptedOut"] * 2  # never published
    await assert_no_code_stored(service)
    # Not charged: once the check answers, the same number gets its code at once.
    check_reply = opt_out_status(opted_out=False)
    assert (await service.request(PHONE)).status_code == 200
    assert [r.form["Action"] for r in stub_server.received[2:]] == [
        "CheckIfPhoneNumberIsOptedOut",
        "Publish",
    ]
    code = code_in(stub_server.received[-1])
    assert (await service.verify(PHONE, code)).status_code == 200


# -- nothing secret in the logs ---------------------------------------------------------------


async def test_codes_never_reach_the_logs(
    make_service: ServiceFactory, stub_server: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    replies = iter([aws_error(400, "Throttling"), aws_error(403, "AuthorizationError")])
    stub_server.respond = lambda _: next(replies, publish_ok())
    service = await make_service(
        real_sender=True, **sns_at(stub_server.url, sms_retry_max_attempts=2)
    )
    with caplog.at_level(logging.DEBUG, logger="otpgate"):
        await service.request(PHONE)
        await service.request(PHONE)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("otpgate"))
    codes = {code_in(r) for r in stub_server.received}
    assert ours
    for code in codes:
        assert code not in ours
    assert PHONE not in ours
