"""The Verify v2 compatible routes, driven by the official `twilio` SDK against a running
`otpgate serve`, as a team moving off Twilio Verify would drive them.

The SDK is pointed at otpgate through its own extension point: a client built with a
custom ``http_client`` (a ``TwilioHttpClient`` that sends each request to otpgate's host
instead of verify.twilio.com), and, in one test, ``client.verify.base_url``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client
from twilio.rest.verify.v2.service import ServiceContext

from otpgate.cli.config_report import describe
from otpgate.config.settings import ConfigError, load_settings
from otpgate.domain.errors import SmsUnavailable, StoreUnavailable
from otpgate.http.app import create_app
from otpgate.http.twilio_verify import purpose_of
from otpgate.store.sqlite import SqliteStore
from otpgate.wiring import build_components
from tests.conftest import ServiceFactory, make_settings
from tests.fakes import CapturingSender, FailingSender
from tests.service_process import ServiceProcess, serving
from tests.sns_emulator import SnsEmulator

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "t0k3n-" + "a" * 32
SERVICE_SID = "VA" + "2" * 32
OTHER_SERVICE_SID = "VA" + "3" * 32
CODE = "123456"
WRONG = "654321"
# Test numbers: stored and limited like any other, the code known, no SMS sent.
PHONES = [f"+1555010{n:04d}" for n in range(40)]

V2_ENV = {
    "VERIFY_V2_ACCOUNT_SID": ACCOUNT_SID,
    "VERIFY_V2_AUTH_TOKEN": AUTH_TOKEN,
    "VERIFY_V2_SERVICES": f"{SERVICE_SID}:Acme Shop,{OTHER_SERVICE_SID}:Acme Bank",
    "TEST_PHONE_NUMBERS": ",".join(f"{phone}={CODE}" for phone in PHONES),
    "PHONE_NUMBER_CHECK": "possible",
}


class OtpgateHttpClient(TwilioHttpClient):
    """The SDK's own HTTP client, sending every request to otpgate's host instead of
    the one the SDK built the URL with (https://verify.twilio.com)."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self._base = urlsplit(base_url)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        moved = urlsplit(url)._replace(scheme=self._base.scheme, netloc=self._base.netloc)
        return super().request(method, urlunsplit(moved), *args, **kwargs)


def twilio_client(base_url: str, token: str = AUTH_TOKEN) -> Client:
    return Client(ACCOUNT_SID, token, http_client=OtpgateHttpClient(base_url))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One otpgate for the module; each test uses numbers of its own, and the per-IP
    windows are wide enough for all of them (one test narrows them, on its own server)."""
    with serving(
        tmp_path_factory.mktemp("v2"),
        never_logged=(AUTH_TOKEN,),  # the credentials are never logged
        RATE_LIMIT_MAX_REQUESTS="1000",
        IP_MAX_PHONES="1000",
        PUMP_PREFIX_MIN_SENDS="1000",
        **V2_ENV,
    ) as process:
        yield process


_phones = iter(PHONES)


@pytest.fixture
def phone() -> str:
    return next(_phones)


@pytest.fixture
def verify(server: ServiceProcess) -> ServiceContext:
    return twilio_client(server.base).verify.v2.services(SERVICE_SID)


_device_ips = (f"198.51.100.{n}" for n in itertools.count(1))


def send(verify: ServiceContext, to: str, **kw: Any) -> Any:
    return verify.verifications.create(to=to, channel="sms", **kw)


def test_create_then_check_approves(verify: ServiceContext, phone: str) -> None:
    created = send(verify, phone, device_ip=next(_device_ips), locale="en")
    assert created.status == "pending"
    assert created.valid is False
    assert created.sid.startswith("VE") and len(created.sid) == 34
    assert created.service_sid == SERVICE_SID
    assert created.account_sid == ACCOUNT_SID
    assert created.to == phone
    assert created.channel == "sms"
    assert created.date_created is not None  # parsed by the SDK: ISO 8601
    assert created.send_code_attempts[0]["channel"] == "sms"
    assert created.url.endswith(f"/v2/Services/{SERVICE_SID}/Verifications/{created.sid}")

    check = verify.verification_checks.create(to=phone, code=CODE)
    assert check.status == "approved"
    assert check.valid is True
    assert check.sid == created.sid


def test_check_by_verification_sid(verify: ServiceContext, phone: str) -> None:
    created = send(verify, phone)
    check = verify.verification_checks.create(verification_sid=created.sid, code=CODE)
    assert (check.status, check.valid, check.to) == ("approved", True, phone)


def test_wrong_code_is_pending_not_valid(verify: ServiceContext, phone: str) -> None:
    created = send(verify, phone)
    check = verify.verification_checks.create(to=phone, code=WRONG)
    assert (check.status, check.valid, check.sid) == ("pending", False, created.sid)
    assert verify.verification_checks.create(to=phone, code=CODE).status == "approved"


def test_attempts_used_up_is_429_60202(verify: ServiceContext, phone: str) -> None:
    send(verify, phone)
    for _ in range(5):  # OTP_MAX_ATTEMPTS
        assert verify.verification_checks.create(to=phone, code=WRONG).valid is False
    with pytest.raises(TwilioRestException) as info:
        verify.verification_checks.create(to=phone, code=CODE)
    assert (info.value.status, info.value.code) == (429, 60202)


def test_fetch_by_sid(verify: ServiceContext, phone: str) -> None:
    created = send(verify, phone)
    fetched = verify.verifications(created.sid).fetch()
    assert (fetched.sid, fetched.status, fetched.to) == (created.sid, "pending", phone)
    verify.verification_checks.create(to=phone, code=CODE)
    assert verify.verifications(created.sid).fetch().status == "approved"


def test_fetch_unknown_sid_is_404(verify: ServiceContext) -> None:
    with pytest.raises(TwilioRestException) as info:
        verify.verifications("VE" + "0" * 32).fetch()
    assert (info.value.status, info.value.code) == (404, 20404)


def test_cancel_then_check_is_404_20404(verify: ServiceContext, phone: str) -> None:
    created = send(verify, phone)
    canceled = verify.verifications(created.sid).update(status="canceled")
    assert (canceled.sid, canceled.status) == (created.sid, "canceled")
    with pytest.raises(TwilioRestException) as info:
        verify.verification_checks.create(to=phone, code=CODE)
    assert (info.value.status, info.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as info:
        verify.verification_checks.create(verification_sid=created.sid, code=CODE)
    assert (info.value.status, info.value.code) == (404, 20404)


def test_approve_by_api_ends_the_verification(verify: ServiceContext, phone: str) -> None:
    """Approved without a code (the app proved the user another way): the code stops."""
    created = send(verify, phone)
    approved = verify.verifications(created.sid).update(status="approved")
    assert (approved.sid, approved.status, approved.valid) == (created.sid, "approved", True)
    assert verify.verifications(created.sid).fetch().status == "approved"
    with pytest.raises(TwilioRestException) as info:
        verify.verification_checks.create(to=phone, code=CODE)
    assert (info.value.status, info.value.code) == (404, 20404)
    # Final: cancelling it now changes nothing.
    assert verify.verifications(created.sid).update(status="canceled").status == "approved"


def test_update_to_another_status_is_400_60200(verify: ServiceContext, phone: str) -> None:
    created = send(verify, phone)
    with pytest.raises(TwilioRestException) as info:
        verify.verifications(created.sid).update(status="pending")
    assert (info.value.status, info.value.code) == (400, 60200)
    assert verify.verifications(created.sid).fetch().status == "pending"


def test_another_services_verification_is_not_found(
    server: ServiceProcess, verify: ServiceContext, phone: str
) -> None:
    created = send(verify, phone)
    other = twilio_client(server.base).verify.v2.services(OTHER_SERVICE_SID)
    calls = [
        lambda: other.verifications(created.sid).fetch(),
        lambda: other.verifications(created.sid).update(status="canceled"),
        lambda: other.verification_checks.create(verification_sid=created.sid, code=CODE),
    ]
    for call in calls:
        with pytest.raises(TwilioRestException) as info:
            call()
        assert (info.value.status, info.value.code) == (404, 20404)
    # Nothing of that touched it: still pending, and its code still checks.
    assert verify.verifications(created.sid).fetch().status == "pending"
    assert verify.verification_checks.create(verification_sid=created.sid, code=CODE).valid


def test_fetch_shows_amount_and_payee(verify: ServiceContext, phone: str) -> None:
    created = send(verify, phone, amount="€39.99", payee="Acme Shop")
    fetched = verify.verifications(created.sid).fetch()
    assert (fetched.amount, fetched.payee) == ("€39.99", "Acme Shop")
    check = verify.verification_checks.create(
        verification_sid=created.sid, code=CODE, amount="€39.99", payee="Acme Shop"
    )
    assert (check.status, check.amount, check.payee) == ("approved", "€39.99", "Acme Shop")


@pytest.mark.parametrize(
    ("name", "value"),
    [("CustomFriendlyName", ""), ("CustomFriendlyName", "x" * 41), ("AppHash", "short")],
)
def test_bad_friendly_name_or_app_hash_is_400_60200(
    verify: ServiceContext, phone: str, name: str, value: str
) -> None:
    if value == "":
        value = "\x07"  # not printable
    keyword = {"CustomFriendlyName": "custom_friendly_name", "AppHash": "app_hash"}[name]
    with pytest.raises(TwilioRestException) as info:
        send(verify, phone, **{keyword: value})
    assert (info.value.status, info.value.code) == (400, 60200)
    assert name in info.value.msg


def test_check_without_a_code_sent_is_404(verify: ServiceContext, phone: str) -> None:
    with pytest.raises(TwilioRestException) as info:
        verify.verification_checks.create(to=phone, code=CODE)
    assert (info.value.status, info.value.code) == (404, 20404)


def test_unknown_service_is_404(server: ServiceProcess, phone: str) -> None:
    unknown = twilio_client(server.base).verify.v2.services("VA" + "9" * 32)
    with pytest.raises(TwilioRestException) as info:
        send(unknown, phone)
    assert (info.value.status, info.value.code) == (404, 20404)


def test_wrong_credentials_are_401_20003(server: ServiceProcess, phone: str) -> None:
    wrong = twilio_client(server.base, token="x" * 40).verify.v2.services(SERVICE_SID)
    with pytest.raises(TwilioRestException) as info:
        send(wrong, phone)
    assert (info.value.status, info.value.code) == (401, 20003)
    # No credentials at all, and an account sid that is not this one.
    url = f"{server.base}/v2/Services/{SERVICE_SID}/Verifications"
    body = {"To": phone, "Channel": "sms"}
    assert httpx.post(url, data=body).status_code == 401
    other = httpx.post(url, data=body, auth=("AC" + "4" * 32, AUTH_TOKEN))
    assert other.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }


def test_to_not_e164_is_400_60200(verify: ServiceContext) -> None:
    with pytest.raises(TwilioRestException) as info:
        send(verify, "5550100")
    assert (info.value.status, info.value.code) == (400, 60200)


def test_a_channel_not_enabled_is_400_60200(verify: ServiceContext, phone: str) -> None:
    # No WEBHOOK_CHANNELS here: WhatsApp has no provider.
    with pytest.raises(TwilioRestException) as info:
        verify.verifications.create(to=phone, channel="whatsapp")
    assert (info.value.status, info.value.code) == (400, 60200)


def test_amount_and_payee_bind_the_code(verify: ServiceContext, phone: str) -> None:
    created = send(verify, phone, amount="€39.99", payee="Acme Shop")
    assert (created.amount, created.payee) == ("€39.99", "Acme Shop")
    for amount, payee in [("€39.99", "Mallory"), ("€3999", "Acme Shop"), (None, None)]:
        kw = {k: v for k, v in {"amount": amount, "payee": payee}.items() if v is not None}
        check = verify.verification_checks.create(to=phone, code=CODE, **kw)
        assert (check.status, check.valid) == ("pending", False)
    check = verify.verification_checks.create(
        to=phone, code=CODE, amount="€39.99", payee="Acme Shop"
    )
    assert (check.status, check.valid) == ("approved", True)


def test_send_inside_the_cooldown_is_429_60203(verify: ServiceContext, phone: str) -> None:
    send(verify, phone)
    with pytest.raises(TwilioRestException) as info:
        send(verify, phone)
    assert (info.value.status, info.value.code) == (429, 60203)


def test_seed_route_and_v2_share_the_store(
    server: ServiceProcess, verify: ServiceContext, phone: str
) -> None:
    """A code sent by the otpgate route is checked by the v2 one, and its cooldown
    refuses a v2 send."""
    sent = server.post("/api/v1/request-otp", {"phoneNumber": phone})
    assert sent.status_code == 200, sent.text
    with pytest.raises(TwilioRestException) as info:
        send(verify, phone)
    assert (info.value.status, info.value.code) == (429, 60203)
    check = verify.verification_checks.create(to=phone, code=CODE)
    assert (check.status, check.sid) == ("approved", sent.json()["verificationId"])


def test_base_url_of_the_verify_domain(server: ServiceProcess, phone: str) -> None:
    """The other way to point the SDK at otpgate: the Verify domain's base URL."""
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.verify.base_url = server.base
    created = client.verify.v2.services(SERVICE_SID).verifications.create(to=phone, channel="sms")
    assert created.status == "pending"


@pytest.mark.integration  # a service process of its own
def test_seed_and_v2_routes_count_in_one_per_ip_window(tmp_path: Path) -> None:
    """Requests to /api/v1/request-otp and to v2 Verifications share one per-IP window."""
    process = ServiceProcess(tmp_path, RATE_LIMIT_MAX_REQUESTS="2", **V2_ENV)
    try:
        process.wait_ready()
        verify = twilio_client(process.base).verify.v2.services(SERVICE_SID)
        assert process.post("/api/v1/request-otp", {"phoneNumber": PHONES[0]}).status_code == 200
        send(verify, PHONES[1])
        with pytest.raises(TwilioRestException) as info:
            send(verify, PHONES[2])
        assert (info.value.status, info.value.code) == (429, 20429)
        assert process.post("/api/v1/request-otp", {"phoneNumber": PHONES[3]}).status_code == 429
        # DeviceIp: the end user's address is counted, not the caller's.
        send(verify, PHONES[4], device_ip="203.0.113.7")
    finally:
        out = process.stop()
    assert "Traceback" not in out, out


# --- real SMS: the SNS emulator, through the real client ------------------------------


@pytest.fixture(scope="module")
def sns_server(
    tmp_path_factory: pytest.TempPathFactory, sns_emulator: SnsEmulator
) -> Iterator[ServiceProcess]:
    """An otpgate that sends by SNS to the emulator; no resend cooldown, three sends per
    number."""
    with serving(
        tmp_path_factory.mktemp("v2-sns"),
        never_logged=(AUTH_TOKEN,),
        SMS_PROVIDER="sns",
        SNS_ENDPOINT_URL=sns_emulator.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        OTP_RESEND_COOLDOWN_SECONDS="0",
        PHONE_SEND_LIMIT="3",
        RATE_LIMIT_MAX_REQUESTS="1000",
        **V2_ENV,
    ) as process:
        yield process


def texts_to(emulator: SnsEmulator, phone: str) -> list[str]:
    return [m["message"] for m in emulator.messages() if m["phone_number"] == phone]


def code_in(text: str) -> str:
    return re.findall(r"\b(\d{6})\b", text)[0]


@pytest.mark.integration
def test_the_code_goes_by_sms_and_names_the_service(
    sns_server: ServiceProcess, sns_emulator: SnsEmulator
) -> None:
    phone = "+12125550181"
    verify = twilio_client(sns_server.base).verify.v2.services(SERVICE_SID)
    created = send(verify, phone)
    (text,) = texts_to(sns_emulator, phone)
    assert "Acme Shop" in text  # the service's friendly name is {app}
    check = verify.verification_checks.create(to=phone, code=code_in(text))
    assert (check.status, check.valid, check.sid) == ("approved", True, created.sid)


@pytest.mark.integration
def test_custom_friendly_name_and_app_hash_shape_the_text(
    sns_server: ServiceProcess, sns_emulator: SnsEmulator
) -> None:
    phone = "+12125550182"
    verify = twilio_client(sns_server.base).verify.v2.services(OTHER_SERVICE_SID)
    send(verify, phone, custom_friendly_name="Acme Pay", app_hash="FA+9qCX9VSu")
    (text,) = texts_to(sns_emulator, phone)
    assert "Acme Pay" in text and "Acme Bank" not in text
    assert text.endswith("\nFA+9qCX9VSu")


@pytest.mark.integration
def test_locale_picks_the_language_of_the_text(
    sns_server: ServiceProcess, sns_emulator: SnsEmulator
) -> None:
    phone = "+12125550184"
    verify = twilio_client(sns_server.base).verify.v2.services(SERVICE_SID)
    send(verify, phone, locale="es")
    (text,) = texts_to(sns_emulator, phone)
    assert "Acme Shop" in text and "expires" not in text  # the Spanish one
    with pytest.raises(TwilioRestException) as info:
        send(verify, phone, locale="not a tag")
    assert (info.value.status, info.value.code) == (400, 60200)


@pytest.mark.integration
def test_a_new_create_for_a_pending_to_keeps_its_sid_and_sends_a_fresh_code(
    sns_server: ServiceProcess, sns_emulator: SnsEmulator
) -> None:
    phone = "+12125550183"
    verify = twilio_client(sns_server.base).verify.v2.services(SERVICE_SID)
    first = send(verify, phone)
    again = send(verify, phone)  # no cooldown on this server
    assert again.sid == first.sid
    assert again.date_created == first.date_created
    assert [a["channel"] for a in again.send_code_attempts] == ["sms", "sms"]
    assert len({a["attempt_sid"] for a in again.send_code_attempts}) == 2
    old, new = (code_in(t) for t in texts_to(sns_emulator, phone))
    if old != new:  # one in a million they are the same code
        stale = verify.verification_checks.create(to=phone, code=old)
        assert (stale.status, stale.valid) == ("pending", False)
    check = verify.verification_checks.create(to=phone, code=new)
    assert (check.status, check.sid) == ("approved", first.sid)
    # Approved: the next create opens a new verification...
    third = send(verify, phone)
    assert third.sid != first.sid
    assert len(third.send_code_attempts) == 1
    # ...and the one after is over PHONE_SEND_LIMIT: 429 60203, and nothing is sent.
    with pytest.raises(TwilioRestException) as info:
        send(verify, phone)
    assert (info.value.status, info.value.code) == (429, 60203)
    assert len(texts_to(sns_emulator, phone)) == 3
    assert verify.verifications(third.sid).fetch().status == "pending"


@pytest.mark.integration
def test_v2_is_off_while_unset(tmp_path: Path) -> None:
    process = ServiceProcess(tmp_path)
    try:
        process.wait_ready()
        url = f"{process.base}/v2/Services/{SERVICE_SID}/Verifications"
        answer = httpx.post(url, data={"To": PHONES[0]}, auth=(ACCOUNT_SID, AUTH_TOKEN))
        assert answer.status_code == 404
    finally:
        process.stop()


# --- configuration and the purpose, no server ------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in V2_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_read_the_three_variables(no_env: pytest.MonkeyPatch) -> None:
    for name, value in V2_ENV.items():
        no_env.setenv(name, value)
    settings = load_settings()
    assert settings.verify_v2_enabled
    assert settings.verify_v2_account_sid == ACCOUNT_SID
    assert settings.verify_v2_auth_token == hashlib.sha256(AUTH_TOKEN.encode()).hexdigest()
    assert settings.verify_v2_services == {
        SERVICE_SID: "Acme Shop",
        OTHER_SERVICE_SID: "Acme Bank",
    }
    assert AUTH_TOKEN not in repr(settings)


def test_settings_take_the_token_as_its_digest(no_env: pytest.MonkeyPatch) -> None:
    digest = hashlib.sha256(AUTH_TOKEN.encode()).hexdigest()
    for name, value in V2_ENV.items():
        no_env.setenv(name, value)
    no_env.setenv("VERIFY_V2_AUTH_TOKEN", f"sha256:{digest}")
    assert load_settings().verify_v2_auth_token == digest


def test_settings_off_by_default(no_env: pytest.MonkeyPatch) -> None:
    assert not load_settings().verify_v2_enabled


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VERIFY_V2_ACCOUNT_SID", "AC123"),
        ("VERIFY_V2_ACCOUNT_SID", "AC" + "G" * 32),
        ("VERIFY_V2_AUTH_TOKEN", "short-token"),
        ("VERIFY_V2_AUTH_TOKEN", "sha256:abc"),
        ("VERIFY_V2_SERVICES", "VA123:Shop"),
        ("VERIFY_V2_SERVICES", SERVICE_SID),
        ("VERIFY_V2_SERVICES", f"{SERVICE_SID}:" + "n" * 31),
        ("VERIFY_V2_SERVICES", f"{SERVICE_SID}:A,{SERVICE_SID}:B"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(
    no_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    for var, good in V2_ENV.items():
        no_env.setenv(var, good)
    no_env.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert name in str(info.value)
    if name == "VERIFY_V2_AUTH_TOKEN":
        assert value not in str(info.value)


@pytest.mark.parametrize("missing", ["VERIFY_V2_AUTH_TOKEN", "VERIFY_V2_SERVICES"])
def test_half_a_configuration_is_refused(no_env: pytest.MonkeyPatch, missing: str) -> None:
    for name, value in V2_ENV.items():
        if name != missing:
            no_env.setenv(name, value)
    with pytest.raises(ConfigError, match=missing):
        load_settings()


def test_purpose_of_amount_and_payee() -> None:
    assert purpose_of(None, None) is None
    bound = purpose_of("39.99", "Acme")
    assert bound is not None and bound.startswith("twilio:") and len(bound) == 39
    assert bound != purpose_of("39.9", "9Acme")  # the separator keeps them apart
    assert bound != purpose_of("39.99", None)


def test_check_config_shows_no_token_digest(no_env: pytest.MonkeyPatch) -> None:
    for name, value in V2_ENV.items():
        no_env.setenv(name, value)
    report = describe(load_settings())
    assert hashlib.sha256(AUTH_TOKEN.encode()).hexdigest() not in report
    assert AUTH_TOKEN not in report
    assert ACCOUNT_SID in report


# --- in-process: answers a running server cannot easily be made to give ---------------


@pytest.fixture
def store_kind() -> str:
    return "sqlite"


@pytest.fixture
def fast_path() -> bool:
    return True  # the v2 routes are Starlette's on either path


V2_SETTINGS = {
    "verify_v2_account_sid": ACCOUNT_SID,
    "verify_v2_auth_token": AUTH_TOKEN,
    "verify_v2_services": f"{SERVICE_SID}:Acme Shop",
}
CREATE = f"/v2/Services/{SERVICE_SID}/Verifications"
ERROR_KEYS = {"code", "message", "more_info", "status"}
FORM_HEADERS = {"content-type": "application/x-www-form-urlencoded"}


async def test_country_not_allowed_is_403_60605(make_service: ServiceFactory) -> None:
    service = await make_service(allowed_countries="GB", **V2_SETTINGS)
    answer = await service.client.post(
        CREATE, data={"To": "+12125550123", "Channel": "sms"}, auth=(ACCOUNT_SID, AUTH_TOKEN)
    )
    assert answer.status_code == 403
    assert answer.json() == {
        "code": 60605,
        "message": answer.json()["message"],
        "more_info": "https://www.twilio.com/docs/errors/60605",
        "status": 403,
    }


async def test_provider_outage_is_503(make_service: ServiceFactory) -> None:
    service = await make_service(FailingSender(SmsUnavailable()), **V2_SETTINGS)
    answer = await service.client.post(
        CREATE, data={"To": "+12125550123", "Channel": "sms"}, auth=(ACCOUNT_SID, AUTH_TOKEN)
    )
    assert answer.status_code == 503
    assert set(answer.json()) == ERROR_KEYS
    assert answer.json()["code"] == 20503


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"To=%2B12125550123&To=%2B12125550124&Channel=sms", FORM_HEADERS),
        (b'{"To":"+12125550123","Channel":"sms"}', {"content-type": "application/json"}),
        (b"Channel=sms", FORM_HEADERS),
        (b"To=%2B12125550123&Channel=sms&DeviceIp=not-an-ip", FORM_HEADERS),
    ],
    ids=["repeated", "json", "no-to", "bad-device-ip"],
)
async def test_malformed_request_is_400_60200_and_counted(
    make_service: ServiceFactory, content: bytes, headers: dict[str, str]
) -> None:
    service = await make_service(**V2_SETTINGS)
    answer = await service.client.post(
        CREATE, content=content, headers=headers, auth=(ACCOUNT_SID, AUTH_TOKEN)
    )
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == ERROR_KEYS
    assert answer.json()["code"] == 60200
    assert answer.headers["x-ratelimit-remaining"] == "4"  # it cost one request


async def test_refused_credentials_cost_no_request(make_service: ServiceFactory) -> None:
    service = await make_service(rate_limit_max_requests=1, **V2_SETTINGS)
    body = {"To": "+12125550123", "Channel": "sms"}
    for _ in range(3):
        answer = await service.client.post(CREATE, data=body, auth=(ACCOUNT_SID, "x" * 40))
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Basic")
    ok = await service.client.post(CREATE, data=body, auth=(ACCOUNT_SID, AUTH_TOKEN))
    assert ok.status_code == 201, ok.text


async def test_seed_route_answers_no_code_as_a_wrong_code(make_service: ServiceFactory) -> None:
    """NoPendingCode is told apart only here: /api/v1/verify-otp says nothing of which."""
    service = await make_service(**V2_SETTINGS)
    never_sent = await service.verify("+12125550123", CODE)
    assert (await service.request("+12125550124")).status_code == 200
    wrong = await service.verify("+12125550124", "000000")
    assert never_sent.status_code == wrong.status_code == 400
    assert never_sent.json() == wrong.json()
    assert wrong.json()["code"] == "invalid_code"


async def test_a_create_answers_from_the_send_on_the_services_clock_when_the_read_fails(
    tmp_path: Path,
) -> None:
    """The send went out but the record cannot be read back: the answer is built from
    the send, dated by the clock every use case reads (here a day ahead), not the host's."""
    ahead = time.time() + 86_400

    class Unreadable(SqliteStore):
        async def get_verification(self, verification_id: str, now: float) -> None:
            raise StoreUnavailable()

    settings = make_settings(tmp_path, **V2_SETTINGS)
    store = Unreadable(tmp_path / "v2.sqlite3")
    components = build_components(
        settings, store=store, sender=CapturingSender(), clock=lambda: ahead
    )
    transport = httpx.ASGITransport(app=create_app(components))
    async with httpx.AsyncClient(transport=transport, base_url="http://otpgate.test") as client:
        answer = await client.post(
            CREATE, data={"To": "+12125550123", "Channel": "sms"}, auth=(ACCOUNT_SID, AUTH_TOKEN)
        )
    await components.close()
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["status"] == "pending"
    day = datetime.fromtimestamp(ahead, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["date_created"] == body["date_updated"] == day
