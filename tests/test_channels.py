"""WhatsApp and voice calls through the webhook, fallback between phone channels, what the
API refuses about channels and addresses, the settings that turn channels on, and the
Verify v2 routes' Channel.

The webhook receiver is the local stub of tests/test_webhook.py, checking every
signature; the email server is tests/smtp_server.py's.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest

from otpgate.config.settings import ConfigError, load_settings
from otpgate.domain.limits import Lockout
from otpgate.domain.ports import OtpStore, SendRequest
from otpgate.store.reference import MemoryStore
from tests.conftest import Service, ServiceFactory
from tests.http_stub import Reply, StubServer
from tests.smtp_server import SmtpServer
from tests.test_sender_contract import charges_left
from tests.test_twilio_verify import ACCOUNT_SID, AUTH_TOKEN, CREATE, SERVICE_SID, V2_SETTINGS
from tests.test_webhook import SECRET, accepted, payload, receiver

PHONE = "+12125550181"
OTHER_PHONE = "+12125550182"


@pytest.fixture
def fast_path() -> bool:
    """Fast paths on only: these senders have none of their own."""
    return True


def webhook_channels(url: str, **overrides: Any) -> dict[str, Any]:
    """SMS, WhatsApp and calls through one receiver; one try per channel, so a provider
    that is down gives up at once."""
    return {
        "sms_provider": "webhook",
        "sms_webhook_url": f"{url}/send",
        "sms_webhook_secret": SECRET,
        "webhook_channels": "whatsapp,call",
        "sms_connect_timeout_seconds": 0.5,
        "sms_read_timeout_seconds": 0.5,
        "sms_retry_max_attempts": 1,
        "sms_retry_max_seconds": 0.5,
        "rate_limit_max_requests": 100,
        **overrides,
    }


def by_channel(replies: dict[str, Reply]) -> Any:
    """A receiver script: each channel's reply, 202 with an id for any other."""
    return lambda r: replies.get(payload(r)["channel"], accepted(f"id-{payload(r)['channel']}"))


async def request(service: Service, **body: Any) -> Any:
    return await service.client.post("/api/v1/request-otp", json=body)


async def verify(service: Service, **body: Any) -> Any:
    return await service.client.post("/api/v1/verify-otp", json=body)


def amr(answer: Any) -> list[str]:
    claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
    return list(claims["amr"])


def digits(text: str) -> str:
    """The code in a message: six digits together, or spelled out for a voice."""
    together = re.search(r"\b(\d{6})\b", text)
    if together:
        return together.group(1)
    spelled = re.search(r"\b(\d(?:, \d){5})\b", text)
    assert spelled, f"no code in {text!r}"
    return spelled.group(1).replace(", ", "")


def assert_error(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert {"statusCode", "error", "message", "code"} <= set(body), body
    assert (body["statusCode"], body["code"]) == (status, code), body
    return body


# -- WhatsApp and calls through the webhook ---------------------------------------------------


async def test_whatsapp_and_calls_go_to_the_webhook_with_their_channel(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    receiver(stub_server, by_channel({}))
    service = await make_service(real_sender=True, **webhook_channels(stub_server.url))

    sent = await request(service, phoneNumber=PHONE, channel="whatsapp")
    assert sent.status_code == 200, sent.text
    assert sent.json()["channel"] == "whatsapp"
    assert sent.json()["messageId"] == "id-whatsapp"
    whatsapp = payload(stub_server.received[-1])
    assert set(whatsapp) == {"phoneNumber", "message", "idempotencyKey", "channel"}
    assert (whatsapp["channel"], whatsapp["phoneNumber"]) == ("whatsapp", PHONE)
    code = digits(whatsapp["message"])
    assert whatsapp["message"].startswith(f"*{code}*")  # the shipped WhatsApp text
    verified = await verify(service, phoneNumber=PHONE, otp=code)
    assert verified.status_code == 200, verified.text
    assert amr(verified) == ["whatsapp"]

    called = await request(service, phoneNumber=OTHER_PHONE, channel="call", locale="es")
    assert called.status_code == 200, called.text
    call = payload(stub_server.received[-1])
    assert call["channel"] == "call"
    assert re.search(r"\d, \d, \d, \d, \d, \d", call["message"])  # a voice says each digit
    verified = await verify(service, phoneNumber=OTHER_PHONE, otp=digits(call["message"]))
    assert verified.status_code == 200, verified.text
    assert amr(verified) == ["tel"]  # RFC 8176: a telephone call

    record = await service.client.get(f"/api/v1/verifications/{called.json()['verificationId']}")
    assert record.json()["channel"] == "call"


async def test_a_phone_channel_not_enabled_is_400(make_service: ServiceFactory) -> None:
    service = await make_service()
    for channel in ("whatsapp", "call"):
        answer = await request(service, phoneNumber=PHONE, channel=channel)
        body = assert_error(answer, 400, "channel_not_enabled")
        assert channel in body["message"]
    assert await charges_left(service) == []


# -- fallback ---------------------------------------------------------------------------------


async def test_whatsapp_unavailable_falls_back_to_sms_in_the_same_request(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    receiver(stub_server, by_channel({"whatsapp": Reply(503)}))
    service = await make_service(
        real_sender=True, **webhook_channels(stub_server.url, channel_fallback="whatsapp>sms")
    )
    answer = await request(service, phoneNumber=PHONE, channel="whatsapp")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["channel"], body["messageId"]) == ("sms", "id-sms")
    assert [payload(r)["channel"] for r in stub_server.received] == ["whatsapp", "sms"]
    whatsapp, sms = (payload(r) for r in stub_server.received)
    assert whatsapp["idempotencyKey"] != sms["idempotencyKey"]  # two messages, not a retry
    code = digits(sms["message"])
    assert code == digits(whatsapp["message"])  # the one code stored

    # The verification says which channel delivered, and so does the token.
    record = await service.client.get(f"/api/v1/verifications/{body['verificationId']}")
    assert (record.json()["channel"], record.json()["status"]) == ("sms", "pending")
    verified = await verify(service, verificationId=body["verificationId"], otp=code)
    assert verified.status_code == 200, verified.text
    assert amr(verified) == ["sms"]


async def test_broken_whatsapp_credentials_fall_back_too(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    receiver(stub_server, by_channel({"whatsapp": Reply(403)}))
    service = await make_service(
        real_sender=True, **webhook_channels(stub_server.url, channel_fallback="whatsapp>sms")
    )
    answer = await request(service, phoneNumber=PHONE, channel="whatsapp")
    assert answer.status_code == 200, answer.text
    assert answer.json()["channel"] == "sms"


async def test_a_refused_number_does_not_fall_back(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    receiver(stub_server, by_channel({"whatsapp": Reply(422)}))
    service = await make_service(
        real_sender=True, **webhook_channels(stub_server.url, channel_fallback="whatsapp>sms")
    )
    answer = await request(service, phoneNumber=PHONE, channel="whatsapp")
    body = assert_error(answer, 400, "recipient_rejected")
    assert body["message"] == "The WhatsApp provider rejected this phone number."
    assert [payload(r)["channel"] for r in stub_server.received] == ["whatsapp"]  # no SMS
    record = await service.client.get(f"/api/v1/verifications/{body['verificationId']}")
    assert (record.json()["channel"], record.json()["status"]) == ("whatsapp", "failed")
    assert await charges_left(service) == []


async def test_when_every_channel_fails_the_last_ones_answer_stands_and_nothing_is_charged(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    receiver(stub_server, lambda _: Reply(503))
    service = await make_service(
        real_sender=True,
        **webhook_channels(stub_server.url, channel_fallback="call>whatsapp>sms"),
    )
    answer = await request(service, phoneNumber=PHONE, channel="call")
    assert_error(answer, 503, "sms_provider_unavailable")
    assert [payload(r)["channel"] for r in stub_server.received] == ["call", "whatsapp", "sms"]
    assert await charges_left(service) == []
    # The phone asks again at once: no cooldown was left behind.
    receiver(stub_server, by_channel({}))
    assert (await request(service, phoneNumber=PHONE, channel="call")).status_code == 200


async def test_sms_unavailable_falls_back_to_whatsapp_for_a_client_that_names_no_channel(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    receiver(stub_server, by_channel({"sms": Reply(503)}))
    service = await make_service(
        real_sender=True, **webhook_channels(stub_server.url, channel_fallback="sms>whatsapp")
    )
    answer = await service.request(PHONE)  # as the seed service was called
    assert answer.status_code == 200, answer.text
    assert answer.json()["channel"] == "whatsapp"  # said, since it is not what was asked


# -- the request refused before anything is sent ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"email": "not-an-address"}, 400, "invalid_email"),
        ({"email": "jane@example"}, 400, "invalid_email"),
        ({"email": ""}, 400, "invalid_email"),
        ({"email": 42}, 400, "invalid_body"),
        ({"phoneNumber": PHONE, "channel": "pigeon"}, 400, "invalid_channel"),
        ({"phoneNumber": PHONE, "channel": "SMS"}, 400, "invalid_channel"),
        ({"email": "jane@example.com", "phoneNumber": PHONE}, 400, "invalid_body"),
        ({"phoneNumber": PHONE, "channel": "email"}, 400, "invalid_body"),
        ({"email": "jane@example.com", "channel": "sms"}, 400, "invalid_body"),
        ({"channel": "sms"}, 400, "invalid_body"),
        ({"email": "jane@example.com"}, 400, "channel_not_enabled"),
    ],
    ids=[
        "malformed-email",
        "email-without-dot",
        "empty-email",
        "email-not-a-string",
        "unknown-channel",
        "channel-in-capitals",
        "email-and-phone",
        "email-channel-with-a-phone",
        "sms-channel-with-an-email",
        "no-recipient",
        "email-channel-off",
    ],
)
async def test_request_otp_refuses_with_the_error_body(
    make_service: ServiceFactory, body: dict[str, Any], status: int, code: str
) -> None:
    service = await make_service()
    answer = await service.client.post("/api/v1/request-otp", json=body)
    error = assert_error(answer, status, code)
    assert set(error) == {"statusCode", "error", "message", "code"}
    assert "x-ratelimit-remaining" in answer.headers  # counted as any request
    assert await charges_left(service) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"email": "jane@example.com", "phoneNumber": PHONE, "otp": "123456"}, "invalid_body"),
        ({"email": "jane@@example.com", "otp": "123456"}, "invalid_email"),
        ({"email": "jane@example.com", "otp": "123456"}, "invalid_code"),
    ],
    ids=["email-and-phone", "malformed-email", "no-code-for-the-address"],
)
async def test_verify_otp_refuses_with_the_error_body(
    make_service: ServiceFactory, body: dict[str, Any], code: str
) -> None:
    service = await make_service()
    answer = await service.client.post("/api/v1/verify-otp", json=body)
    assert_error(answer, 400, code)


async def test_a_client_that_names_no_channel_gets_the_answer_it_always_got(
    make_service: ServiceFactory,
) -> None:
    service = await make_service()
    answer = await service.request(PHONE)
    assert set(answer.json()) == {"message", "messageId", "expiresIn", "verificationId"}
    named = await request(service, phoneNumber=OTHER_PHONE, channel="sms")
    assert named.json()["channel"] == "sms"


# -- Verify v2 ----------------------------------------------------------------------------------


async def test_verify_v2_sends_and_checks_an_email_code(
    make_service: ServiceFactory, smtp_server: SmtpServer
) -> None:
    service = await make_service(**smtp_server.settings(), **V2_SETTINGS)
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    created = await service.client.post(
        CREATE, data={"To": "Ada@Example.com", "Channel": "email"}, auth=auth
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["to"], body["channel"], body["status"]) == ("ada@example.com", "email", "pending")
    code = smtp_server.last("ada@example.com").code
    assert "Acme Shop" in smtp_server.last("ada@example.com").text  # the service's name
    check = f"/v2/Services/{SERVICE_SID}/VerificationCheck"
    approved = await service.client.post(
        check, data={"To": "ada@example.com", "Code": code}, auth=auth
    )
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["channel"]) == ("approved", "email")


async def test_verify_v2_sends_by_whatsapp_and_refuses_unknown_channels(
    make_service: ServiceFactory, stub_server: StubServer
) -> None:
    receiver(stub_server, by_channel({}))
    service = await make_service(
        real_sender=True, **webhook_channels(stub_server.url), **V2_SETTINGS
    )
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    created = await service.client.post(
        CREATE, data={"To": PHONE, "Channel": "whatsapp"}, auth=auth
    )
    assert created.status_code == 201, created.text
    assert created.json()["channel"] == "whatsapp"
    assert payload(stub_server.received[-1])["channel"] == "whatsapp"
    for channel in ("sna", "auto", "email"):  # email: no SMTP here
        answer = await service.client.post(
            CREATE, data={"To": OTHER_PHONE, "Channel": channel}, auth=auth
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == 60200


# -- settings -------------------------------------------------------------------------------------

SMTP = {"SMTP_HOST": "smtp.example.com", "EMAIL_FROM": "otp@example.com"}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({**SMTP, "SMTP_HOST": "smtp://smtp.example.com"}, "SMTP_HOST"),
        ({**SMTP, "SMTP_PORT": "0"}, "SMTP_PORT"),
        ({**SMTP, "SMTP_PORT": "smtp"}, "SMTP_PORT"),
        ({**SMTP, "EMAIL_FROM": "not an address"}, "EMAIL_FROM"),
        ({**SMTP, "EMAIL_FROM": "Acme <otp@localhost>"}, "EMAIL_FROM"),
        ({**SMTP, "EMAIL_FROM": "otp@bücher.example"}, "EMAIL_FROM"),
        ({"SMTP_HOST": "smtp.example.com"}, "EMAIL_FROM"),
        ({**SMTP, "SMTP_USERNAME": "otpgate"}, "SMTP_PASSWORD"),
        ({**SMTP, "SMTP_PASSWORD": "secret-value-42"}, "SMTP_USERNAME"),
        ({**SMTP, "SMTP_TLS": "true", "SMTP_STARTTLS": "true"}, "SMTP_STARTTLS"),
        ({**SMTP, "SMTP_TLS": "maybe"}, "SMTP_TLS"),
        ({**SMTP, "SMTP_TIMEOUT_SECONDS": "0"}, "SMTP_TIMEOUT_SECONDS"),
        ({"SMTP_PORT": "587"}, "SMTP_PORT"),
        ({"EMAIL_FROM": "otp@example.com"}, "EMAIL_FROM"),
        ({"WEBHOOK_CHANNELS": "sms"}, "WEBHOOK_CHANNELS"),
        ({"WEBHOOK_CHANNELS": "whatsapp"}, "SMS_WEBHOOK_URL"),
        ({"CHANNEL_FALLBACK": "whatsapp>sms"}, "CHANNEL_FALLBACK"),
        ({"CHANNEL_FALLBACK": "email>sms"}, "CHANNEL_FALLBACK"),
        ({"CHANNEL_FALLBACK": "sms"}, "CHANNEL_FALLBACK"),
        ({"CHANNEL_FALLBACK": "sms>sms"}, "CHANNEL_FALLBACK"),
        ({"CHANNEL_FALLBACK": "sms>pigeon"}, "CHANNEL_FALLBACK"),
        ({"EMAIL_DOMAIN_PER_HOUR": "0"}, "EMAIL_DOMAIN_PER_HOUR"),
    ],
)
def test_each_bad_channel_setting_is_refused_by_name(
    env: dict[str, str], named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert f"{named}: " in str(info.value)
    assert "secret-value-42" not in str(info.value)


def test_plain_smtp_is_refused_in_production_unless_to_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in {**SMTP, "SMTP_STARTTLS": "false", "APP_ENV": "production"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "SMTP_STARTTLS: refused as false when APP_ENV=production" in str(info.value)


def test_channel_settings_that_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        **SMTP,
        "EMAIL_FROM": "Acme Verify <otp@example.com>",
        "SMTP_TLS": "true",
        "SMTP_USERNAME": "otpgate",
        "SMTP_PASSWORD": "secret-value-42",
        "SMS_WEBHOOK_URL": "http://127.0.0.1:9/send",
        "SMS_WEBHOOK_SECRET": SECRET,
        "WEBHOOK_CHANNELS": "whatsapp, call",
        "CHANNEL_FALLBACK": "whatsapp>sms, call>whatsapp>sms",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.enabled_channels == ["sms", "email", "whatsapp", "call"]
    assert settings.effective_smtp_port == 465
    assert settings.effective_smtp_starttls is False
    assert settings.channel_fallback == {"whatsapp": ["sms"], "call": ["whatsapp", "sms"]}
    # A call that falls back twice may take three sends' worst case; SHUTDOWN waits for it.
    assert settings.delivery_worst_case_seconds == 3 * settings.sms_worst_case_seconds
    assert "secret-value-42" not in repr(settings)


def test_a_webhook_receiver_for_sms_alone_gets_no_other_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMS_PROVIDER", "webhook")
    monkeypatch.setenv("SMS_WEBHOOK_URL", "http://127.0.0.1:9/send")
    monkeypatch.setenv("SMS_WEBHOOK_SECRET", SECRET)
    assert load_settings().enabled_channels == ["sms"]


def test_webhook_payload_fields_are_the_docs_s() -> None:
    """The documented example payload (docs/channels.md), field by field."""
    page = (Path(__file__).parents[1] / "docs" / "channels.md").read_text()
    example = re.search(r'\n(\{"phoneNumber": .*?\})\n', page, re.DOTALL)
    assert example, "docs/channels.md shows no webhook payload"
    assert list(orjson.loads(example.group(1))) == [
        "phoneNumber",
        "message",
        "idempotencyKey",
        "channel",
    ]


# -- the store's part: a fallback's channel recorded ------------------------------------------


async def test_set_channel_changes_only_the_records_channel(store: OtpStore) -> None:
    await check_set_channel(store)


async def test_the_memory_store_sets_the_channel_alike() -> None:
    await check_set_channel(MemoryStore())


async def check_set_channel(store: OtpStore) -> None:
    now = 1_800_000_000.0
    sent = SendRequest(
        PHONE,
        b"h" * 32,
        300,
        60,
        send_id="s1",
        verification_id="VE" + "1" * 32,
        channel="whatsapp",
        retention_seconds=600,
    )
    await store.issue(sent, now)
    before = await store.get_verification(sent.verification_id, now)
    assert before is not None and before.channel == "whatsapp"
    await store.set_channel(sent.verification_id, "sms")
    after = await store.get_verification(sent.verification_id, now + 1)
    assert after is not None
    assert (after.channel, after.status, after.updated_at) == ("sms", "pending", before.updated_at)
    # No record, nothing made: a lookup still finds none.
    await store.set_channel("VE" + "2" * 32, "sms")
    assert await store.get_verification("VE" + "2" * 32, now) is None
    # The code is untouched.
    attempt = await store.begin_verify(PHONE, 300, now + 2, Lockout())
    assert attempt.code_hash == b"h" * 32


async def test_an_address_locked_out_is_lifted_and_logged_masked(
    make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    admin_key = "admin-key-" + "c" * 32
    service = await make_service(
        admin_api_keys=f"ops:{admin_key}",
        phone_lockout_threshold=2,
        rate_limit_max_requests=100,
    )
    address = "lock.me@example.com"
    for _ in range(2):
        assert_error(await verify(service, email=address, otp="123456"), 400, "invalid_code")
    locked = await verify(service, email=address, otp="123456")
    body = assert_error(locked, 429, "phone_locked")
    assert body["message"] == "Too many failed attempts for this address. Try again later."
    keyed = {"authorization": f"Bearer {admin_key}"}
    [block] = (await service.client.get("/admin/v1/blocks", headers=keyed)).json()["blocks"]
    assert (block["kind"], block["scope"]) == ("phone_locked", address)
    lift = await service.client.delete(f"/admin/v1/blocks/phone_locked/{address}", headers=keyed)
    assert lift.status_code == 200, lift.text
    assert_error(await verify(service, email=address, otp="123456"), 400, "invalid_code")
    ours = [r for r in caplog.records if r.name.startswith("otpgate")]
    assert address not in " ".join(f"{r.getMessage()} {vars(r)}" for r in ours)
    assert any(getattr(r, "scope", None) == "l***@example.com" for r in ours)
