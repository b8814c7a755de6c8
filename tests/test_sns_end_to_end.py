"""The real SNS client against the emulator: the SMS a phone would get verifies."""

from __future__ import annotations

import re

from tests.conftest import ServiceFactory
from tests.sns_emulator import SnsEmulator

PHONE = "+12125550142"


async def test_request_sms_verify_then_refuse_reuse(
    make_service: ServiceFactory, sns_emulator: SnsEmulator, sns_settings: dict[str, object]
) -> None:
    svc = await make_service(real_sender=True, **sns_settings)
    assert svc.components.sender.name == "sns"
    phone = PHONE
    r = await svc.request(phone)
    assert r.status_code == 200, r.text
    message_id = r.json()["messageId"]

    sms = sns_emulator.last_message(phone)
    assert sms["message_id"] == message_id
    match = re.search(r"\b(\d{6})\b", sms["message"])
    assert match, sms
    code = match.group(1)

    assert (await svc.verify(phone, code)).status_code == 200
    second = await svc.verify(phone, code)
    assert second.status_code == 400
    assert second.json()["code"] == "invalid_code"
