"""request-otp's ``locale``: the SMS in that language, a fallback, or a 400 when malformed.

The language never touches the store, so SQLite alone serves, on both HTTP paths.
"""

from __future__ import annotations

from typing import Any

import pytest

from otpgate.domain.message import DEFAULT_TEMPLATE
from otpgate.domain.service import SendOptions
from tests.conftest import ServiceFactory
from tests.fakes import CapturingSender

pytestmark = pytest.mark.parametrize(
    ("store_kind", "fast_path"),
    [("sqlite", True), ("sqlite", False)],
    ids=["fast", "stock"],
    indirect=True,
)

PHONE = "+12125550123"
REQUEST = "/api/v1/request-otp"


async def request(make_service: ServiceFactory, body: dict[str, Any]) -> tuple[Any, str | None]:
    """The answer, and the SMS text sent (None when none was)."""
    sender = CapturingSender()
    service = await make_service(sender, sms_app_name="Acme")
    response = await service.client.post(REQUEST, json={"phoneNumber": PHONE, **body})
    return response, (sender.sent[-1][1] if sender.sent else None)


async def test_a_spanish_request_gets_the_spanish_sms(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    service = await make_service(sender, sms_app_name="Acme")
    response = await service.client.post(REQUEST, json={"phoneNumber": PHONE, "locale": "es"})
    assert response.status_code == 200, response.text
    [(_, text)] = sender.sent
    code = sender.last_code(PHONE)
    assert text == f"{code} es tu clave de Acme. Vence en 5 minutos. No la compartas con nadie."
    assert (await service.verify(PHONE, code)).status_code == 200


async def test_the_use_case_takes_the_locale_among_its_options(
    make_service: ServiceFactory,
) -> None:
    sender = CapturingSender()
    service = await make_service(sender, sms_app_name="Acme")
    options = SendOptions(locale="de-AT")
    await service.components.service.request_code(PHONE, "198.51.100.7", options=options)
    [(_, text)] = sender.sent
    assert text.endswith(
        "ist Ihr Bestätigungscode für Acme. Er läuft in 5 Minuten ab. Geben Sie ihn nicht weiter."
    )


@pytest.mark.parametrize(
    ("locale", "start"),
    [
        ("pt-BR", "é seu código Acme."),  # the region falls back to its language
        ("HI", "आपका Acme कोड है।"),  # any case
        ("zz", "is your Acme verification code."),  # well formed, unknown: English
        ("EN-gb", "is your Acme verification code."),
        (None, "is your Acme verification code."),
    ],
)
async def test_other_locales_fall_back(
    make_service: ServiceFactory, locale: str | None, start: str
) -> None:
    response, text = await request(make_service, {"locale": locale})
    assert response.status_code == 200, response.text
    assert text is not None
    assert text.split(" ", 1)[1].startswith(start)


async def test_without_a_locale_the_sms_is_exactly_as_before(make_service: ServiceFactory) -> None:
    response, text = await request(make_service, {})
    assert response.status_code == 200
    assert set(response.json()) == {"message", "messageId", "expiresIn", "verificationId"}
    assert text is not None
    code = text.split()[0]
    assert text == DEFAULT_TEMPLATE.format(code=code, app="Acme", minutes=5)


@pytest.mark.parametrize("locale", ["pt_BR", "", "english please", "es\n", "e" * 36])
async def test_a_malformed_locale_is_a_400_and_sends_nothing(
    make_service: ServiceFactory, locale: str
) -> None:
    response, text = await request(make_service, {"locale": locale})
    assert response.status_code == 400
    assert response.json() == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": "locale must be a BCP 47 language tag, such as es or pt-BR.",
        "code": "invalid_locale",
    }
    assert text is None


async def test_a_locale_that_is_not_a_string_is_a_bad_body(make_service: ServiceFactory) -> None:
    response, text = await request(make_service, {"locale": 7})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_body")
    assert text is None
