"""The email channel end to end: a real SMTP server (aiosmtpd, started here on a loopback
port) receives the code, the test reads it from the delivered message, and the flow
verifies on both stores. Then every way SMTP can fail, each with its one answer and
nothing left charged, and the limits an address shares with a phone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jwt
import pytest

from otpgate.config.settings import ConfigError, load_settings
from otpgate.domain.errors import DeliveryFailed, DeliveryRejected, DeliveryUnavailable
from otpgate.http.api import REQUEST_OK_EMAIL
from tests.conftest import Service, ServiceFactory
from tests.smtp_server import SmtpServer
from tests.test_sender_contract import charges_left
from tests.tls_certs import TestAuthority

EMAIL = "Jane.Doe@Example.COM"
ADDRESS = "jane.doe@example.com"  # as the service keeps it, and sends to it
OTHER = "sam@example.com"
UNTRUSTED = "email provider (smtp): smtp: the server's certificate is not trusted"


@pytest.fixture
def fast_path() -> bool:
    """Fast paths on only: the email sender has none of its own, and the HTTP answers
    these tests see are checked in both modes elsewhere."""
    return True


async def request(service: Service, **body: Any) -> Any:
    return await service.client.post("/api/v1/request-otp", json=body)


async def verify(service: Service, **body: Any) -> Any:
    return await service.client.post("/api/v1/verify-otp", json=body)


def assert_error(answer: Any, status: int, code: str, message: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    body.pop("verificationId", None)
    assert set(body) == {"statusCode", "error", "message", "code"}, body
    assert (body["statusCode"], body["code"]) == (status, code)
    if message is not None:
        assert body["message"] == message


async def test_a_code_sent_by_email_verifies_once(
    make_service: ServiceFactory, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    service = await make_service(**smtp_server.settings())
    answer = await request(service, email=EMAIL, locale="en")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["message"] == REQUEST_OK_EMAIL
    assert body["channel"] == "email"
    assert set(body) == {"message", "messageId", "expiresIn", "verificationId", "channel"}

    mail = smtp_server.last(ADDRESS)
    assert mail.mail_from == "otp@example.com"
    assert mail.rcpt_tos == [ADDRESS]
    assert mail.message["To"] == ADDRESS
    assert mail.message["From"] == "Acme <otp@example.com>"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert mail.message["Message-ID"].strip("<>") == body["messageId"]
    code = mail.code
    assert mail.message["Subject"] == f"{code} is your otpgate verification code"
    assert code in mail.html and "<p" in mail.html

    verified = await verify(service, email=EMAIL, otp=code)
    assert verified.status_code == 200, verified.text
    claims = jwt.decode(verified.json()["token"], options={"verify_signature": False})
    assert claims["sub"] == ADDRESS
    assert claims["amr"] == ["email"]
    assert claims["jti"] == body["verificationId"]

    again = await verify(service, email=ADDRESS, otp=code)  # used once: gone
    assert_error(again, 400, "invalid_code")

    record = (await service.client.get(f"/api/v1/verifications/{body['verificationId']}")).json()
    assert record["email"] == "j***@example.com"
    assert "phoneNumber" not in record
    assert (record["status"], record["channel"]) == ("approved", "email")

    for entry in caplog.records:
        text = entry.getMessage() + repr(entry.__dict__)
        assert code not in text, text
        if entry.name.startswith("otpgate"):
            assert ADDRESS not in text, text


async def test_verify_by_verification_id_and_wrong_attempts(
    make_service: ServiceFactory, smtp_server: SmtpServer
) -> None:
    service = await make_service(**smtp_server.settings(otp_max_attempts=2))
    sent = (await request(service, email=OTHER, channel="email")).json()
    code = smtp_server.last(OTHER).code
    wrong = "0" * 6 if code != "0" * 6 else "1" * 6
    # The address and the id must agree.
    mismatch = await verify(service, email=ADDRESS, verificationId=sent["verificationId"], otp=code)
    assert_error(mismatch, 400, "invalid_code")
    assert_error(await verify(service, email=OTHER, otp=wrong), 400, "invalid_code")
    assert_error(await verify(service, email=OTHER, otp=wrong), 400, "invalid_code")
    # The attempts are used up: even the right code is refused.
    assert_error(await verify(service, email=OTHER, otp=code), 429, "too_many_attempts")


async def test_an_address_has_the_cooldown_and_send_limits_of_a_phone(
    make_service: ServiceFactory, smtp_server: SmtpServer
) -> None:
    service = await make_service(
        **smtp_server.settings(
            otp_resend_cooldown_seconds=60, email_domain_per_hour=2, rate_limit_max_requests=100
        )
    )
    assert (await request(service, email=EMAIL)).status_code == 200
    # The same mailbox however it is spelled.
    again = await request(service, email="JANE.DOE@example.com")
    assert_error(
        again,
        429,
        "resend_cooldown",
        "A code was sent to this address recently. Wait before asking again.",
    )
    assert int(again.headers["retry-after"]) > 0
    assert (await request(service, email=OTHER)).status_code == 200
    # Two codes to example.com this hour: its budget is spent.
    third = await request(service, email="kim@example.com")
    assert_error(third, 429, "email_domain_budget")
    assert (await request(service, email="kim@example.org")).status_code == 200


async def test_a_code_requested_for_an_address_never_verifies_a_phone(
    make_service: ServiceFactory, smtp_server: SmtpServer
) -> None:
    service = await make_service(**smtp_server.settings())
    sent = (await request(service, email=OTHER)).json()
    code = smtp_server.last(OTHER).code
    by_phone = await verify(
        service, phoneNumber="+12125550123", verificationId=sent["verificationId"], otp=code
    )
    assert_error(by_phone, 400, "invalid_code")
    assert (await verify(service, email=OTHER, otp=code)).status_code == 200


# -- every failure: one answer, nothing left charged -----------------------------------------


async def test_a_refused_recipient_is_400_and_charges_nothing(
    make_service: ServiceFactory, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse[ADDRESS] = "550 5.1.1 <jane.doe@example.com>: no such user"
    service = await make_service(**smtp_server.settings())
    answer = await request(service, email=EMAIL)
    assert_error(answer, 400, "recipient_rejected", "The mail server refused this email address.")
    assert answer.json()["verificationId"].startswith("VE")
    assert "retry-after" not in answer.headers
    assert await charges_left(service) == []
    assert (await service.client.get("/ready")).status_code == 200
    # Once the server takes it, the address asks again at once (no cooldown left).
    del smtp_server.refuse[ADDRESS]
    assert (await request(service, email=EMAIL)).status_code == 200
    assert (await verify(service, email=EMAIL, otp=smtp_server.last(ADDRESS).code)).is_success


async def test_a_temporary_refusal_is_503_and_charges_nothing(
    make_service: ServiceFactory, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse[ADDRESS] = "450 4.2.1 try again later"
    service = await make_service(**smtp_server.settings())
    answer = await request(service, email=EMAIL)
    assert_error(answer, 503, "provider_unavailable")
    assert int(answer.headers["retry-after"]) >= 1
    assert await charges_left(service) == []


async def test_a_server_that_is_down_is_503_and_charges_nothing(
    make_service: ServiceFactory, refused_smtp_port: int
) -> None:
    service = await make_service(
        smtp_host="127.0.0.1",
        smtp_port=refused_smtp_port,
        smtp_starttls=False,
        email_from="otp@example.com",
    )
    answer = await request(service, email=EMAIL)
    assert_error(
        answer,
        503,
        "provider_unavailable",
        "The mail server is temporarily unavailable. Please try again later.",
    )
    assert int(answer.headers["retry-after"]) >= 1
    assert await charges_left(service) == []
    # An outage hits every instance alike: readiness stays up.
    assert (await service.client.get("/ready")).status_code == 200


async def test_a_slow_server_times_out_as_503_and_charges_nothing(
    make_service: ServiceFactory, smtp_server: SmtpServer
) -> None:
    smtp_server.rcpt_delay = 5.0
    service = await make_service(**smtp_server.settings(smtp_timeout_seconds=0.5))
    answer = await request(service, email=EMAIL)
    assert_error(answer, 503, "provider_unavailable")
    assert await charges_left(service) == []
    assert smtp_server.received == []


async def test_refused_authentication_is_502_and_unready_until_a_send_succeeds(
    make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = SmtpServer(user="otpgate", password="the-server-expects-this")
    server.start()
    try:
        service = await make_service(
            **server.settings(smtp_username="otpgate", smtp_password="a-wrong-password")
        )
        for _ in range(2):
            answer = await request(service, email=EMAIL)
            assert_error(answer, 502, "provider_error", "The email could not be sent.")
            assert await charges_left(service) == []
        ready = await service.client.get("/ready")
        assert ready.status_code == 503, ready.text
        [reason] = ready.json()["reasons"]
        assert reason == "email provider (smtp): smtp: authentication refused"
        assert "a-wrong-password" not in caplog.text
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]  # logged once

        server.password = "a-wrong-password"  # the server now takes our password
        assert (await request(service, email=EMAIL)).status_code == 200
        assert (await service.client.get("/ready")).status_code == 200
        assert server.received
    finally:
        server.stop()


# -- what is refused before anything is sent --------------------------------------------------


async def test_the_email_channel_is_off_while_smtp_is_unset(make_service: ServiceFactory) -> None:
    service = await make_service()
    answer = await request(service, email=EMAIL)
    assert_error(
        answer, 400, "channel_not_enabled", "The email channel is not enabled on this service."
    )
    assert await charges_left(service) == []


def test_the_errors_of_every_channel_share_their_bases() -> None:
    """What the service falls back on, and what it does not: the SMS errors are cases."""
    from otpgate.domain.errors import SmsFailed, SmsOptedOut, SmsRejected, SmsUnavailable

    assert issubclass(SmsRejected, DeliveryRejected)
    assert issubclass(SmsOptedOut, DeliveryRejected)
    assert issubclass(SmsUnavailable, DeliveryUnavailable)
    assert issubclass(SmsFailed, DeliveryFailed)


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        (
            {"smtp_starttls": True},
            "email provider (smtp): smtp: the server does not fit the settings: SMTP STARTTLS"
            " extension not supported by server.",
        ),
        (
            {"email_from": "otp@example.com", "_auth": True},
            "email provider (smtp): smtp: the server requires authentication"
            " (SMTP_USERNAME, SMTP_PASSWORD)",
        ),
    ],
    ids=["starttls-not-offered", "auth-required-none-given"],
)
async def test_a_server_that_does_not_fit_the_settings_is_502_and_unready(
    make_service: ServiceFactory, settings: dict[str, Any], reason: str
) -> None:
    wanted = dict(settings)
    auth = wanted.pop("_auth", False)
    server = SmtpServer(user="otpgate", password="pw") if auth else SmtpServer()
    server.start()
    try:
        service = await make_service(**server.settings(**wanted))
        answer = await request(service, email=EMAIL)
        assert_error(answer, 502, "provider_error")
        assert await charges_left(service) == []
        ready = await service.client.get("/ready")
        assert ready.json()["reasons"] == [reason]
    finally:
        server.stop()


# -- SMTP_TLS_CA_FILE: a server whose certificate a private CA issued -------------------------


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "tls"])
async def test_a_private_ca_lets_the_email_go_out_over_tls(
    make_service: ServiceFactory, tmp_path: Path, implicit_tls: bool
) -> None:
    authority = TestAuthority(tmp_path, "smtp")
    certificate = authority.issue("smtp-server", hosts=("127.0.0.1",))
    server = SmtpServer(certificate=certificate, implicit_tls=implicit_tls)
    server.start()
    try:
        # Without the CA, the server's certificate is not trusted: nothing goes out.
        untrusting = await make_service(**server.settings())
        assert_error(await request(untrusting, email=EMAIL), 502, "provider_error")
        assert await charges_left(untrusting) == []
        ready = await untrusting.client.get("/ready")
        assert ready.json()["reasons"] == [UNTRUSTED]
        assert server.received == []

        service = await make_service(**server.settings(smtp_tls_ca_file=authority.ca_file))
        sent = await request(service, email=EMAIL)
        assert sent.status_code == 200, sent.text
        verified = await verify(service, email=EMAIL, otp=server.last(ADDRESS).code)
        assert verified.status_code == 200, verified.text
    finally:
        server.stop()


async def test_the_ca_does_not_vouch_for_another_name(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    """The host name is checked against the certificate, private CA or not."""
    authority = TestAuthority(tmp_path, "smtp")
    certificate = authority.issue("smtp-server", hosts=("mail.example.com",))
    server = SmtpServer(certificate=certificate)
    server.start()
    try:
        service = await make_service(**server.settings(smtp_tls_ca_file=authority.ca_file))
        assert_error(await request(service, email=EMAIL), 502, "provider_error")
        assert server.received == []
    finally:
        server.stop()


def test_an_unusable_ca_file_stops_start_up(tmp_path: Path) -> None:
    base = {"smtp_host": "smtp.example.com", "email_from": "otp@example.com"}
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("not a certificate\n")
    for ca_file, why in [
        (tmp_path / "missing.pem", "cannot load CA certificates from"),
        (not_pem, "cannot load CA certificates from"),
    ]:
        with pytest.raises(ConfigError, match=f"SMTP_TLS_CA_FILE: {why} {ca_file}"):
            load_settings(_env_file=None, smtp_tls_ca_file=ca_file, **base)
    ca = TestAuthority(tmp_path, "smtp").ca_file
    with pytest.raises(ConfigError, match="SMTP_TLS_CA_FILE: set, but the connection is plain"):
        load_settings(_env_file=None, smtp_tls_ca_file=ca, smtp_starttls=False, **base)
    with pytest.raises(ConfigError, match="SMTP_TLS_CA_FILE: set without SMTP_HOST"):
        load_settings(_env_file=None, smtp_tls_ca_file=ca)
    assert load_settings(_env_file=None, smtp_tls_ca_file=ca, **base).smtp_tls_ca_file == ca
