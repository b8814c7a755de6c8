"""Start-up refuses SMS delivery settings that cannot work, naming the variable."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otpgate.cli.config_report import describe, redact_url, shown
from otpgate.config.settings import ConfigError, load_settings
from tests.conftest import FACTOR_KEYS, HASH_SECRET

WEBHOOK_SECRET = "w" * 32
PRODUCTION = {
    "app_env": "production",
    "factor_encryption_keys": FACTOR_KEYS,
    "otp_hash_secret": HASH_SECRET,
    "token_signing_keys_file": "/etc/otpgate/token-signing-keys.pem",
    "sms_provider": "sns",
    "allowed_countries": "US",
    "api_auth": "off",
}


def load(tmp_path: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "_env_file": None,
        "sqlite_path": tmp_path / "otpgate.sqlite3",
        "otp_hash_secret": HASH_SECRET,
    }
    values.update(overrides)
    return load_settings(**values)


def refused(tmp_path: Path, **overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **overrides)
    return str(caught.value)


def test_template_refused_with_its_name(tmp_path: Path) -> None:
    assert "SMS_MESSAGE_TEMPLATE: must contain {code}" in refused(
        tmp_path, sms_message_template="Hello"
    )
    assert "SMS_MESSAGE_TEMPLATE: unknown placeholder {name}" in refused(
        tmp_path, sms_message_template="{code} {name}"
    )


def test_webotp_and_android_settings(tmp_path: Path) -> None:
    settings = load(
        tmp_path, sms_webotp_domain="Login.Example.com", sms_android_app_hash="FA+9qCX9VSu"
    )
    assert settings.sms_webotp_domain == "login.example.com"
    assert "SMS_WEBOTP_DOMAIN" in refused(tmp_path, sms_webotp_domain="https://example.com")
    assert "SMS_WEBOTP_DOMAIN" in refused(tmp_path, sms_webotp_domain="example.com/login")
    assert "SMS_ANDROID_APP_HASH" in refused(tmp_path, sms_android_app_hash="short")


@pytest.mark.parametrize("sender_id", ["MyApp", "A", "Acme2FA", "ABCDEFGHIJK"])
def test_sender_id_accepted(tmp_path: Path, sender_id: str) -> None:
    assert load(tmp_path, sns_sms_sender_id=sender_id).sns_sms_sender_id == sender_id


@pytest.mark.parametrize("sender_id", ["ABCDEFGHIJKL", "My App", "My-App", "12345", "Çafé"])
def test_sender_id_refused(tmp_path: Path, sender_id: str) -> None:
    message = refused(tmp_path, sns_sms_sender_id=sender_id)
    assert "SNS_SMS_SENDER_ID: must be 1 to 11 letters and digits" in message


def test_blank_optional_values_mean_unset(tmp_path: Path) -> None:
    settings = load(tmp_path, sns_sms_sender_id="", sms_webotp_domain=" ", sns_max_price="")
    assert settings.sns_sms_sender_id is None
    assert settings.sms_webotp_domain is None
    assert settings.sns_max_price is None


def test_sns_attributes_validated(tmp_path: Path) -> None:
    settings = load(tmp_path, sns_origination_number="+18005550100", sns_max_price="0.50")
    assert settings.sns_max_price == Decimal("0.50")
    assert "SNS_ORIGINATION_NUMBER" in refused(tmp_path, sns_origination_number="18005550100")
    assert "SNS_MAX_PRICE" in refused(tmp_path, sns_max_price="0")
    assert "SNS_MAX_PRICE" in refused(tmp_path, sns_max_price="cheap")


def test_test_numbers_parse_from_the_environment_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_PHONE_NUMBERS", " +12125550100=123456, +12125550101=654321 ,")
    settings = load(tmp_path)
    assert {n: c.get_secret_value() for n, c in settings.test_phone_numbers.items()} == {
        "+12125550100": "123456",
        "+12125550101": "654321",
    }
    # The codes are as good as passwords for those numbers: check-config hides them.
    report = describe(settings)
    assert "123456" not in report
    assert "654321" not in report


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("+12125550100", "entry 1 is not number=code"),
        ("+12125550100=123456,+12125550100=654321", "entry 2 repeats a number"),
        ("12125550100=123456", "entry 1: the number is not in E.164 form"),
        ("+1 212 555 0100=123456", "entry 1: the number is not in E.164 form"),
        ("+12125550100=12a456", "entry 1: the code must be digits only"),
        ("+12125550100=12345", "entry 1: the code must have OTP_LENGTH (6) digits"),
        ("+15550100000=123456", "entry 1: the number fails PHONE_NUMBER_CHECK=valid"),
    ],
)
def test_bad_test_numbers_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("TEST_PHONE_NUMBERS", value)
    message = refused(tmp_path)
    assert f"TEST_PHONE_NUMBERS: {reason}" in message
    code = value.partition("=")[2].split(",")[0]
    if code:
        assert code not in message  # codes are never echoed back


def test_test_numbers_refused_in_production_unless_allowed(tmp_path: Path) -> None:
    numbers = {"+12125550100": "123456"}
    message = refused(tmp_path, **PRODUCTION, test_phone_numbers=numbers)
    assert "TEST_PHONE_NUMBERS: refused when APP_ENV=production" in message
    assert "ALLOW_TEST_NUMBERS_IN_PRODUCTION=true" in message
    allowed = load(
        tmp_path, **PRODUCTION, test_phone_numbers=numbers, allow_test_numbers_in_production=True
    )
    assert len(allowed.test_phone_numbers) == 1


def test_webhook_needs_url_and_secret(tmp_path: Path) -> None:
    message = refused(tmp_path, sms_provider="webhook")
    assert "SMS_WEBHOOK_URL: required when SMS_PROVIDER=webhook" in message
    assert "SMS_WEBHOOK_SECRET: required when SMS_PROVIDER=webhook" in message
    short = refused(
        tmp_path,
        sms_provider="webhook",
        sms_webhook_url="http://127.0.0.1:9/",
        sms_webhook_secret="x",
    )
    assert "SMS_WEBHOOK_SECRET: must be at least 32 characters" in short
    assert "SMS_WEBHOOK_URL: must be an http" in refused(
        tmp_path,
        sms_provider="webhook",
        sms_webhook_url="ftp://x",
        sms_webhook_secret=WEBHOOK_SECRET,
    )


def test_webhook_in_production_needs_https_or_loopback(tmp_path: Path) -> None:
    base = {**PRODUCTION, "sms_provider": "webhook", "sms_webhook_secret": WEBHOOK_SECRET}
    message = refused(tmp_path, **base, sms_webhook_url="http://sms-relay.internal/send")
    assert "SMS_WEBHOOK_URL: must be https://" in message
    for url in (
        "https://sms-relay.internal/send",
        "http://127.0.0.1:8080/send",
        "http://localhost/x",
    ):
        assert load(tmp_path, **base, sms_webhook_url=url).effective_sms_provider == "webhook"


@pytest.mark.parametrize(
    ("url", "shown_as"),
    [
        ("https://sms.example.com", "https://sms.example.com"),
        ("https://sms.example.com/", "https://sms.example.com/"),
        (
            "https://sms.example.com/hooks/T0/B0/abcdefsecret",
            "https://sms.example.com/<redacted>",
        ),
        (
            "https://sms.example.com/send?token=abcdefsecret",
            "https://sms.example.com/<redacted>",
        ),
        (
            "https://u:abcdefsecret@sms.example.com/x",
            "https://u:****@sms.example.com/<redacted>",
        ),
    ],
)
def test_check_config_shows_only_where_the_webhook_goes(url: str, shown_as: str) -> None:
    # A webhook URL often carries its receiver's token in the path or query.
    assert shown("sms_webhook_url", url) == shown_as
    assert "abcdefsecret" not in shown("sms_webhook_url", url)


@pytest.mark.parametrize(
    ("url", "shown_as"),
    [
        ("redis://h:6379/0?password=abcdefsecret", "redis://h:6379/0?password=****"),
        (
            "rediss://h:6379/0?ssl_cert_reqs=none&auth_token=abcdefsecret",
            "rediss://h:6379/0?ssl_cert_reqs=none&auth_token=****",
        ),
        (
            "redis://:abcdefsecret@h:6379/0?socket_timeout=5",
            "redis://:****@h:6379/0?socket_timeout=5",
        ),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_credentials_in_a_url_query_are_masked(url: str, shown_as: str) -> None:
    assert redact_url(url) == shown_as
