"""Verification records, purpose binding and the routes about one verification.

Through the app (both stores, both HTTP paths, as ``make_service`` parametrises)
and through the use case with an injected clock, where time has to pass.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

from otpgate.domain.codes import CodeHasher
from otpgate.domain.errors import (
    InvalidCode,
    SmsUnavailable,
    TooManyAttempts,
    VerificationNotFound,
)
from otpgate.domain.limits import AbusePolicy
from otpgate.domain.message import MessageTemplate
from otpgate.domain.policy import OtpPolicy
from otpgate.domain.ports import OtpStore
from otpgate.domain.service import OtpService
from tests.conftest import Service, ServiceFactory, make_settings
from tests.fakes import CapturingSender, FailingSender, RecordingSigner

PHONE = "+12125550123"
OTHER = "+12125550124"
KEY = "ops-" + "Hk3vT8qW" * 5
KEYED = {"api_keys": f"ops:{KEY}", "rate_limit_max_requests": 1000}
BEARER = {"authorization": f"Bearer {KEY}"}
VERIFICATION_ID = re.compile(r"VE[0-9a-f]{32}")


async def _request(svc: Service, phone: str = PHONE, **body: Any) -> dict[str, Any]:
    r = await svc.client.post("/api/v1/request-otp", json={"phoneNumber": phone, **body})
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def _verify(svc: Service, **body: Any) -> Any:
    return await svc.client.post("/api/v1/verify-otp", json=body)


async def _status(svc: Service, vid: str, **headers: str) -> dict[str, Any]:
    r = await svc.client.get(f"/api/v1/verifications/{vid}", headers=headers)
    assert r.status_code == 200, r.text
    record: dict[str, Any] = r.json()
    return record


async def test_a_request_opens_a_pending_verification_that_a_verify_approves(
    make_service: ServiceFactory,
) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, **KEYED)
    vid = (await _request(svc, purpose="login"))["verificationId"]
    assert VERIFICATION_ID.fullmatch(vid)

    record = await _status(svc, vid)
    assert record["status"] == "pending"
    assert record["phoneNumber"] == "+1212***0123"  # masked without a key
    assert (record["channel"], record["purpose"]) == ("sms", "login")
    assert record["createdAt"].endswith("Z") and record["expiresAt"] > record["createdAt"]
    assert (await _status(svc, vid, **BEARER))["phoneNumber"] == PHONE
    assert sender.last_code(PHONE) not in str(record)

    ok = await _verify(svc, phoneNumber=PHONE, otp=sender.last_code(PHONE), purpose="login")
    assert ok.status_code == 200, ok.text
    assert ok.json()["verificationId"] == vid
    assert (await _status(svc, vid))["status"] == "approved"


async def test_verify_by_verification_id_alone_or_with_its_own_phone(
    make_service: ServiceFactory,
) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, **KEYED)
    vid = (await _request(svc))["verificationId"]
    code = sender.last_code(PHONE)
    # Another phone with this verification is a wrong code, and counts as an attempt.
    wrong = await _verify(svc, verificationId=vid, phoneNumber=OTHER, otp=code)
    assert (wrong.status_code, wrong.json()["code"]) == (400, "invalid_code")
    unknown = await _verify(svc, verificationId="VE" + "0" * 32, otp=code)
    assert (unknown.status_code, unknown.json()["code"]) == (400, "invalid_code")
    neither = await _verify(svc, otp=code)
    assert (neither.status_code, neither.json()["code"]) == (400, "invalid_body")

    ok = await _verify(svc, verificationId=vid, otp=code)
    assert ok.status_code == 200, ok.text
    assert ok.json()["verificationId"] == vid


async def test_a_code_verifies_only_for_its_purpose(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender)
    await _request(svc, purpose="login")
    code = sender.last_code(PHONE)
    for other in ({"purpose": "transfer:1"}, {}):
        r = await _verify(svc, phoneNumber=PHONE, otp=code, **other)
        assert (r.status_code, r.json()["code"]) == (400, "invalid_code"), other
    ok = await _verify(svc, phoneNumber=PHONE, otp=code, purpose="login")
    assert ok.status_code == 200, ok.text
    bad = await svc.client.post(
        "/api/v1/request-otp", json={"phoneNumber": PHONE, "purpose": "no spaces"}
    )
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_body")


async def test_a_canceled_verification_refuses_its_code(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, **KEYED)
    vid = (await _request(svc))["verificationId"]
    r = await svc.client.post(f"/api/v1/verifications/{vid}/cancel", headers=BEARER)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"
    late = await _verify(svc, phoneNumber=PHONE, otp=sender.last_code(PHONE))
    assert (late.status_code, late.json()["code"]) == (400, "invalid_code")
    assert (await _status(svc, vid))["status"] == "canceled"


async def test_a_newer_code_cancels_the_older_verification(make_service: ServiceFactory) -> None:
    svc = await make_service(otp_resend_cooldown_seconds=0, **KEYED)
    first = (await _request(svc))["verificationId"]
    second = (await _request(svc))["verificationId"]
    assert (await _status(svc, first))["status"] == "canceled"
    assert (await _status(svc, second))["status"] == "pending"


@pytest.mark.parametrize("mode", ["off", "optional", "required"])
async def test_cancel_needs_a_valid_key_in_every_mode(
    make_service: ServiceFactory, mode: str
) -> None:
    svc = await make_service(api_auth=mode, **KEYED)
    vid = (
        await svc.client.post("/api/v1/request-otp", json={"phoneNumber": PHONE}, headers=BEARER)
    ).json()["verificationId"]
    for headers in ({}, {"authorization": "Bearer " + "x" * 40}):
        r = await svc.client.post(f"/api/v1/verifications/{vid}/cancel", headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"].startswith("Bearer")
    record = await _status(svc, vid, **BEARER)
    assert record["status"] == "pending"


async def test_an_unknown_verification_is_404(make_service: ServiceFactory) -> None:
    svc = await make_service(**KEYED)
    for vid in ("VE" + "0" * 32, "not-an-id"):
        r = await svc.client.get(f"/api/v1/verifications/{vid}")
        assert (r.status_code, r.json()["code"]) == (404, "verification_not_found")
        c = await svc.client.post(f"/api/v1/verifications/{vid}/cancel", headers=BEARER)
        assert (c.status_code, c.json()["code"]) == (404, "verification_not_found")


async def test_a_failed_send_answers_its_verification_which_says_failed(
    make_service: ServiceFactory,
) -> None:
    svc = await make_service(sender=FailingSender(SmsUnavailable()), **KEYED)
    r = await svc.client.post("/api/v1/request-otp", json={"phoneNumber": PHONE})
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["code"] == "sms_provider_unavailable"
    assert (await _status(svc, body["verificationId"]))["status"] == "failed"


async def test_the_last_failed_attempt_turns_the_verification_at_once(
    make_service: ServiceFactory,
) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, otp_max_attempts=3, **KEYED)
    vid = (await _request(svc))["verificationId"]
    code = sender.last_code(PHONE)
    wrong = "0" * 6 if code != "0" * 6 else "1" * 6
    for attempt in range(1, 4):
        r = await _verify(svc, phoneNumber=PHONE, otp=wrong)
        assert r.json()["code"] == "invalid_code"
        expected = "max_attempts_reached" if attempt == 3 else "pending"
        assert (await _status(svc, vid))["status"] == expected, attempt
    # Even the right code is refused now, and the status stays.
    r = await _verify(svc, phoneNumber=PHONE, otp=code)
    assert r.json()["code"] == "too_many_attempts"
    assert (await _status(svc, vid))["status"] == "max_attempts_reached"


# -- time passing: the use case with an injected clock, on every store ------------------


def _service(store: OtpStore, sender: CapturingSender, clock: list[float]) -> OtpService:
    return OtpService(
        store,
        sender,
        CodeHasher(b"k" * 32),
        OtpPolicy(ttl_seconds=300, verification_retention_seconds=3600),
        AbusePolicy(resend_cooldown_seconds=0),
        RecordingSigner(),
        clock=lambda: clock[0],
    )


async def test_a_verification_expires_with_its_code_then_goes_after_retention(
    store: OtpStore, store_settings: dict[str, Any]
) -> None:
    clock = [1_900_000_000.0]
    sender = CapturingSender()
    service = _service(store, sender, clock)
    sent = await service.request_code(PHONE, "198.51.100.7")
    assert (await service.verification(sent.verification_id)).status == "pending"
    clock[0] += 300
    expired = await service.verification(sent.verification_id)
    assert expired.status == "expired"
    assert (await service.cancel(sent.verification_id)).status == "expired"
    # The record is kept for the retention after the code, then gone. (Redis forgets it
    # by its own clock, which the injected one is far ahead of: checked by its expiry.)
    clock[0] += 3600
    vid = sent.verification_id
    if "redis_url" in store_settings:
        client = redis.Redis.from_url(store_settings["redis_url"])
        try:
            key = f"{store_settings['redis_key_prefix']}{{{vid}}}:ver"
            assert client.pexpiretime(key) == 1_900_003_900_000
        finally:
            client.close()
    else:
        with pytest.raises(VerificationNotFound):
            await service.verification(vid)


async def test_a_code_attempted_past_its_limit_is_refused_on_every_store(
    store: OtpStore,
) -> None:
    clock = [1_900_000_000.0]
    sender = CapturingSender()
    service = _service(store, sender, clock)
    sent = await service.request_code(PHONE, "198.51.100.7", purpose="transfer:9")
    for _ in range(5):
        with pytest.raises(InvalidCode):
            await service.verify_code(PHONE, sender.last_code(PHONE))  # no purpose: wrong
    assert (await service.verification(sent.verification_id)).status == "max_attempts_reached"
    with pytest.raises(TooManyAttempts):
        await service.verify_code(PHONE, sender.last_code(PHONE), purpose="transfer:9")


# -- the SMS may show the purpose, only when asked ---------------------------------------


def test_the_template_shows_the_purpose_only_when_asked(tmp_path: Any) -> None:
    template = "{code} approves {purpose} at {app}"
    with pytest.raises(ValueError, match="SMS_SHOW_PURPOSE"):
        make_settings(tmp_path, sms_message_template=template)
    assert make_settings(tmp_path, sms_message_template=template, sms_show_purpose=True)
    shown = MessageTemplate(template=template, app="Acme", show_purpose=True)
    assert shown.render("123456", 300, "transfer:9") == "123456 approves transfer:9 at Acme"
    hidden = MessageTemplate(template="{code} at {app}", app="Acme")
    assert hidden.render("123456", 300, "transfer:9") == "123456 at Acme"
