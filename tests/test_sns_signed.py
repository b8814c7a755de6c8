"""SNS that checks every signature, as AWS does: moto with authentication on."""

from __future__ import annotations

import re

from tests.conftest import ServiceFactory
from tests.sns_emulator import SigningSnsEmulator

PHONE = "+12125550177"


def settings(emulator: SigningSnsEmulator, secret: str | None = None) -> dict[str, object]:
    return {
        "sms_provider": "sns",
        "sns_endpoint_url": emulator.url,
        "aws_access_key_id": emulator.access_key_id,
        "aws_secret_access_key": secret or emulator.secret_access_key,
        "aws_region": "us-east-1",
    }


async def test_the_publish_is_accepted_by_a_signature_checking_endpoint(
    make_service: ServiceFactory, signing_sns_emulator: SigningSnsEmulator
) -> None:
    """Both publish paths: the lean one must send the bytes botocore would, since the
    emulator re-encodes the form it parsed before it checks the signature."""
    svc = await make_service(real_sender=True, **settings(signing_sns_emulator))
    sent = await svc.request(PHONE)
    assert sent.status_code == 200, sent.text
    message = signing_sns_emulator.last_message(PHONE)["message"]
    assert " " in message  # the text that %20 instead of + used to break
    code = re.search(r"\b(\d{6})\b", message)
    assert code is not None
    assert (await svc.verify(PHONE, code.group(1))).status_code == 200


async def test_a_wrong_secret_fails_the_signature_check(
    make_service: ServiceFactory, signing_sns_emulator: SigningSnsEmulator
) -> None:
    svc = await make_service(
        real_sender=True, **settings(signing_sns_emulator, secret="not-the-secret-key")
    )
    refused = await svc.request("+12125550178")
    assert refused.status_code == 502
    assert refused.json()["code"] == "sms_provider_error"
