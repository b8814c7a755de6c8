"""Texts to landlines: refused before anything is charged or sent, unless SMS_TO_LANDLINES.

libphonenumber (9.x) types every number of region US itself FIXED_LINE_OR_MOBILE, which
is sent; the +1 landline here is American Samoa's (a US territory on the NANP), the UK
one a London number, the Italian one keeps its national leading zero in E.164 (which
``parse_phone``'s shortcut declines, so the full parse is exercised too).
"""

from __future__ import annotations

from typing import Any

import phonenumbers
import pytest

from otpgate.domain.phone import _known_valid, is_landline, parse_phone
from tests.conftest import ServiceFactory
from tests.fakes import CapturingSender
from tests.http_stub import Reply, StubServer
from tests.test_sender_contract import charges_left
from tests.test_twilio_verify import ACCOUNT_SID, AUTH_TOKEN, CREATE, V2_SETTINGS
from tests.test_webhook import SECRET, accepted, payload, receiver

US_TERRITORY_LANDLINE = "+16846221234"  # American Samoa, FIXED_LINE
UK_LANDLINE = "+442071234567"  # London, FIXED_LINE
IT_LANDLINE = "+390212345678"  # Milan, FIXED_LINE, leading zero
UK_MOBILE = "+447400123456"  # MOBILE
US_EITHER = "+12125550123"  # FIXED_LINE_OR_MOBILE: cannot be told apart, so sent
LANDLINES = [US_TERRITORY_LANDLINE, UK_LANDLINE, IT_LANDLINE]


@pytest.fixture
def fast_path() -> bool:
    """The check sits in the use case, below any fast path."""
    return True


def libphonenumber_type(e164: str) -> int:
    return int(phonenumbers.number_type(phonenumbers.parse(e164, None)))


def test_the_numbers_are_of_the_types_the_tests_say() -> None:
    fixed = phonenumbers.PhoneNumberType.FIXED_LINE
    for number in LANDLINES:
        assert libphonenumber_type(number) == fixed, number
    assert libphonenumber_type(UK_MOBILE) == phonenumbers.PhoneNumberType.MOBILE
    assert libphonenumber_type(US_EITHER) == phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE


def test_the_type_is_the_same_whichever_path_parsed_the_number() -> None:
    """Every example number of every region: the shortcut's and the full parse's E.164
    give the type libphonenumber gives the number."""
    fixed = phonenumbers.PhoneNumberType.FIXED_LINE
    shortcut = full = 0
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in (fixed, phonenumbers.PhoneNumberType.MOBILE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None or not phonenumbers.is_valid_number(example):
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            if _known_valid(e164) is None:
                full += 1
            else:
                shortcut += 1
            parsed = parse_phone(e164)
            assert is_landline(parsed.e164) == (phonenumbers.number_type(example) == fixed), e164
    assert shortcut > 100 and full > 0, (shortcut, full)


@pytest.mark.parametrize(
    ("number", "landline"),
    [*((n, True) for n in LANDLINES), (UK_MOBILE, False), (US_EITHER, False)],
)
async def test_an_sms_to_a_landline_is_refused_and_nothing_is_sent(
    make_service: ServiceFactory, number: str, landline: bool
) -> None:
    """Landlines only: a mobile, and a number that may be one, are sent."""
    sender = CapturingSender()
    service = await make_service(sender)
    answer = await service.request(number)
    if not landline:
        assert answer.status_code == 200, answer.text
        assert [to for to, _ in sender.sent] == [number]
        return
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["code"] == "landline_not_supported"
    assert "mobile number" in body["message"]
    assert "call" not in body["message"]  # no voice channel here: none is offered
    assert sender.sent == []
    # Nothing was charged: the same number, allowed, is sent at once (no cooldown).
    allowed = await make_service(sender, sms_to_landlines=True)
    sent = await allowed.request(number)
    assert sent.status_code == 200, sent.text
    assert [to for to, _ in sender.sent] == [number]


def calls_too(url: str, **overrides: Any) -> dict[str, Any]:
    """SMS through the capturing sender, WhatsApp and calls through the webhook."""
    return {
        "sms_webhook_url": f"{url}/send",
        "sms_webhook_secret": SECRET,
        "webhook_channels": "whatsapp,call",
        "sms_retry_max_attempts": 1,
        **overrides,
    }


async def test_with_calls_enabled_the_refusal_offers_one_and_a_call_goes_out(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    receiver(stub_server, lambda r: accepted(f"id-{payload(r)['channel']}"))
    sender = CapturingSender()
    service = await make_service(sender, **calls_too(stub_server.url))
    for channel in ("sms", "whatsapp"):
        answer = await service.client.post(
            "/api/v1/request-otp", json={"phoneNumber": UK_LANDLINE, "channel": channel}
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == "landline_not_supported"
        assert "channel: call" in answer.json()["message"]
    assert sender.sent == [] and stub_server.received == []

    called = await service.client.post(
        "/api/v1/request-otp", json={"phoneNumber": UK_LANDLINE, "channel": "call"}
    )
    assert called.status_code == 200, called.text
    assert [payload(r)["channel"] for r in stub_server.received] == ["call"]


async def test_a_fallback_to_calls_is_offered_too(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    sender = CapturingSender()
    service = await make_service(
        sender, **calls_too(stub_server.url, webhook_channels="call", channel_fallback="sms>call")
    )
    answer = await service.request(US_TERRITORY_LANDLINE)
    assert answer.status_code == 400, answer.text
    assert "channel: call" in answer.json()["message"]
    assert sender.sent == [] and stub_server.received == []


async def test_a_call_to_a_landline_falls_back_to_no_text(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    """call>sms: when the call's provider is down, a mobile gets the SMS; a landline, which
    no SMS reaches, gets the call's error and nothing is charged."""
    receiver(stub_server, lambda r: Reply(503))
    sender = CapturingSender()
    service = await make_service(
        sender, **calls_too(stub_server.url, webhook_channels="call", channel_fallback="call>sms")
    )

    async def call(number: str) -> Any:
        return await service.client.post(
            "/api/v1/request-otp", json={"phoneNumber": number, "channel": "call"}
        )

    landline = await call(UK_LANDLINE)
    assert landline.status_code == 503, landline.text
    assert landline.json()["code"] == "provider_unavailable"
    assert sender.sent == []
    assert await charges_left(service) == []
    mobile = await call(UK_MOBILE)
    assert mobile.status_code == 200, mobile.text
    assert mobile.json()["channel"] == "sms"
    assert [to for to, _ in sender.sent] == [UK_MOBILE]
    assert len(stub_server.received) == 2  # a call was tried for each


async def test_verify_v2_answers_twilio_s_landline_error(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    service = await make_service(sender, **V2_SETTINGS)
    answer = await service.client.post(
        CREATE, data={"To": UK_LANDLINE, "Channel": "sms"}, auth=(ACCOUNT_SID, AUTH_TOKEN)
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == 60205
    assert answer.json()["more_info"] == "https://www.twilio.com/docs/errors/60205"
    assert sender.sent == []


async def test_a_test_number_on_a_landline_keeps_its_fixed_code(
    make_service: ServiceFactory,
) -> None:
    """A test number is sent nothing, so the refusal has nothing to save it from."""
    sender = CapturingSender()
    service = await make_service(sender, test_phone_numbers=f"{UK_LANDLINE}=123456")
    sent = await service.request(UK_LANDLINE)
    assert sent.status_code == 200, sent.text
    verified = await service.verify(UK_LANDLINE, "123456")
    assert verified.status_code == 200, verified.text
    assert sender.sent == []
