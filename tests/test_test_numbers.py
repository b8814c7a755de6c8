"""Test numbers: a fixed code and no SMS, and every other rule still applies."""

from __future__ import annotations

from tests.conftest import ServiceFactory
from tests.fakes import CapturingSender

TEST_NUMBER = "+12125550100"
FIXED_CODE = "123456"
REAL_NUMBER = "+12125550123"
NUMBERS = {TEST_NUMBER: FIXED_CODE, "+447911123456": "654321"}


async def test_fixed_code_verifies_and_no_sms_goes_out(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    service = await make_service(sender, test_phone_numbers=NUMBERS)
    response = await service.request(TEST_NUMBER)
    assert response.status_code == 200
    assert response.json()["messageId"]
    assert response.json()["expiresIn"] == 300
    assert sender.sent == []
    assert (await service.verify(TEST_NUMBER, FIXED_CODE)).status_code == 200
    # Consumed like any code: it does not work twice.
    assert (await service.verify(TEST_NUMBER, FIXED_CODE)).json()["code"] == "invalid_code"


async def test_real_numbers_are_untouched(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    service = await make_service(sender, test_phone_numbers=NUMBERS)
    assert (await service.request(REAL_NUMBER)).status_code == 200
    code = sender.last_code(REAL_NUMBER)
    assert (await service.verify(REAL_NUMBER, code)).status_code == 200


async def test_no_code_before_a_request(make_service: ServiceFactory) -> None:
    service = await make_service(test_phone_numbers=NUMBERS)
    response = await service.verify(TEST_NUMBER, FIXED_CODE)
    assert response.json()["code"] == "invalid_code"


async def test_cooldown_and_quota_apply(make_service: ServiceFactory) -> None:
    service = await make_service(
        test_phone_numbers=NUMBERS,
        otp_resend_cooldown_seconds=60,
        rate_limit_max_requests=100,
    )
    assert (await service.request(TEST_NUMBER)).status_code == 200
    refused = await service.request(TEST_NUMBER)
    assert refused.status_code == 429
    assert refused.json()["code"] == "resend_cooldown"

    quota = await make_service(
        test_phone_numbers=NUMBERS,
        otp_resend_cooldown_seconds=0,
        phone_send_limit=2,
        rate_limit_max_requests=100,
        sqlite_path=service.settings.sqlite_path.with_name("quota.sqlite3"),
    )
    assert [(await quota.request("+447911123456")).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]


async def test_attempt_limit_applies(make_service: ServiceFactory) -> None:
    service = await make_service(
        test_phone_numbers=NUMBERS, otp_max_attempts=2, rate_limit_max_requests=100
    )
    await service.request(TEST_NUMBER)
    assert (await service.verify(TEST_NUMBER, "000000")).json()["code"] == "invalid_code"
    assert (await service.verify(TEST_NUMBER, "000001")).json()["code"] == "invalid_code"
    locked = await service.verify(TEST_NUMBER, FIXED_CODE)
    assert locked.json()["code"] == "too_many_attempts"


async def test_invalid_number_rules_still_apply(make_service: ServiceFactory) -> None:
    service = await make_service(test_phone_numbers=NUMBERS)
    response = await service.request("+15550100000")
    assert response.json()["code"] == "invalid_phone_number"


async def test_country_allow_list_still_applies(make_service: ServiceFactory) -> None:
    service = await make_service(test_phone_numbers=NUMBERS, allowed_countries="US")
    assert (await service.request(TEST_NUMBER)).status_code == 200
    refused = await service.request("+447911123456")
    assert refused.status_code == 403
    assert refused.json()["code"] == "country_not_allowed"


async def test_test_numbers_never_reach_a_provider(
    make_service: ServiceFactory, refused_url: str
) -> None:
    """Even with the real SNS client pointed at nothing, a test number succeeds."""
    service = await make_service(
        real_sender=True,
        test_phone_numbers=NUMBERS,
        sms_provider="sns",
        sns_endpoint_url=refused_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    assert (await service.request(TEST_NUMBER)).status_code == 200
    assert (await service.verify(TEST_NUMBER, FIXED_CODE)).status_code == 200
    assert service.components.sender.problem is None
