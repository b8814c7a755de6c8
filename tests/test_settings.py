"""Start-up refuses bad or unsafe configuration, naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from otpgate.settings import ConfigError, Settings, load_settings
from tests.conftest import make_settings

SECRET = "s" * 40
KEYS_FILE = "/etc/otpgate/token-signing-keys.pem"  # settings only name it; wiring reads it


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray variable or .env from the machine running the tests."""
    monkeypatch.chdir(tmp_path)
    for name in [
        *list(Settings.model_fields),
        "NODE_ENV",
        "SNS_ENDPOINT",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "TRUST_PROXY",
    ]:
        monkeypatch.delenv(name.upper(), raising=False)


def test_defaults_run_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch)
    assert s.app_env == "development"
    assert s.effective_sms_provider == "console"
    assert s.redis_url is None
    assert (s.port, s.otp_length, s.otp_ttl_seconds, s.otp_max_attempts) == (3000, 6, 300, 5)


def test_node_service_names_keep_working(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(
        monkeypatch,
        NODE_ENV="production",
        OTP_HASH_SECRET=SECRET,
        TOKEN_SIGNING_KEYS_FILE=KEYS_FILE,
        ALLOWED_COUNTRIES="US,CA",
        PORT="8080",
        OTP_LENGTH="8",
        RATE_LIMIT_MAX_REQUESTS="10",
        RATE_LIMIT_WINDOW_MS="30000",
        SNS_ENDPOINT="http://127.0.0.1:5055",
        AWS_DEFAULT_REGION="eu-west-1",
        SNS_SMS_SENDER_ID="MyApp",
        SNS_SMS_TYPE="Promotional",
    )
    assert s.production
    assert s.effective_sms_provider == "sns"
    assert (s.port, s.otp_length, s.rate_limit_max_requests) == (8080, 8, 10)
    assert s.sns_endpoint_url == "http://127.0.0.1:5055"
    assert s.aws_region == "eu-west-1"
    assert s.sns_sms_type == "Promotional"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "seventy"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"OTP_LENGTH": "3"}, "OTP_LENGTH"),
        ({"OTP_TTL_SECONDS": "-5"}, "OTP_TTL_SECONDS"),
        ({"SMS_PROVIDER": "carrier-pigeon"}, "SMS_PROVIDER"),
        ({"SNS_SMS_SENDER_ID": "Far-Too-Long-Sender"}, "SNS_SMS_SENDER_ID"),
        ({"SNS_SMS_TYPE": "Urgent"}, "SNS_SMS_TYPE"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({"TRUSTED_PROXIES": "10.0.0.0/8,not-an-ip"}, "TRUSTED_PROXIES"),
        ({"ALLOWED_COUNTRIES": "US,XX"}, "ALLOWED_COUNTRIES"),
        ({"COUNTRY_SMS_BUDGETS": "US=100,GB"}, "COUNTRY_SMS_BUDGETS"),
        ({"COUNTRY_SMS_BUDGETS": "ZZ=100"}, "COUNTRY_SMS_BUDGETS"),
        ({"PHONE_MAX_CONSECUTIVE_FAILURES": "101"}, "PHONE_MAX_CONSECUTIVE_FAILURES"),
        (
            {"PHONE_LOCKOUT_THRESHOLD": "50", "PHONE_MAX_CONSECUTIVE_FAILURES": "40"},
            "PHONE_LOCKOUT_THRESHOLD",
        ),
        ({"TOKEN_TTL_SECONDS": "59"}, "TOKEN_TTL_SECONDS"),
        ({"TOKEN_TTL_SECONDS": "3601"}, "TOKEN_TTL_SECONDS"),
        ({"TOKEN_TTL_SECONDS": "soon"}, "TOKEN_TTL_SECONDS"),
        ({"TOKEN_ISSUER": ""}, "TOKEN_ISSUER"),
        ({"TOKEN_AUDIENCE": ""}, "TOKEN_AUDIENCE"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(monkeypatch, **env)
    assert named in str(info.value)


def test_production_requires_hash_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="OTP_HASH_SECRET"):
        load(monkeypatch, APP_ENV="production")


def test_token_settings_default_and_accept_their_range(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch)
    assert (s.token_issuer, s.token_audience, s.token_ttl_seconds) == ("otpgate", "otpgate", 300)
    assert s.token_signing_keys_file is None  # development: a key is created and kept
    assert s.token_dev_key_file == Path(".otpgate/token-signing-key.pem")
    assert load(monkeypatch, TOKEN_TTL_SECONDS="60").token_ttl_seconds == 60
    assert load(monkeypatch, TOKEN_TTL_SECONDS="3600").token_ttl_seconds == 3600


def test_production_requires_a_signing_keys_file(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        load(monkeypatch, APP_ENV="production", OTP_HASH_SECRET=SECRET, ALLOWED_COUNTRIES="US")
    assert "TOKEN_SIGNING_KEYS_FILE: required when APP_ENV=production" in str(info.value)
    s = load(
        monkeypatch,
        APP_ENV="production",
        OTP_HASH_SECRET=SECRET,
        ALLOWED_COUNTRIES="US",
        TOKEN_SIGNING_KEYS_FILE=KEYS_FILE,
    )
    assert s.token_signing_keys_file == Path(KEYS_FILE)


def test_production_refuses_short_hash_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="OTP_HASH_SECRET") as info:
        load(monkeypatch, APP_ENV="production", OTP_HASH_SECRET="short")
    assert "short" not in str(info.value).replace("shorter", "")


def test_production_requires_an_explicit_country_list(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="ALLOWED_COUNTRIES"):
        load(monkeypatch, APP_ENV="production", OTP_HASH_SECRET=SECRET)
    everywhere = load(
        monkeypatch,
        APP_ENV="production",
        OTP_HASH_SECRET=SECRET,
        TOKEN_SIGNING_KEYS_FILE=KEYS_FILE,
        ALLOWED_COUNTRIES="*",
    )
    assert everywhere.allowed_regions is None
    some = load(monkeypatch, ALLOWED_COUNTRIES="us, gb")
    assert some.allowed_regions == frozenset({"US", "GB"})


def test_country_budgets_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch, COUNTRY_SMS_BUDGETS="us=500, GB=20")
    assert s.country_sms_budgets == {"US": 500, "GB": 20}


def test_production_refuses_console_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="SMS_PROVIDER"):
        load(monkeypatch, APP_ENV="production", OTP_HASH_SECRET=SECRET, SMS_PROVIDER="console")


def test_error_never_echoes_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        load(monkeypatch, APP_ENV="production", OTP_HASH_SECRET="tiny-secret-value")
    assert "tiny-secret-value" not in str(info.value)


def test_dotenv_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=4321\nOTP_LENGTH=7\n")
    s = load_settings()
    assert (s.port, s.otp_length) == (4321, 7)


def test_default_shutdown_timeout_covers_one_sms_worst_case(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert settings.sms_worst_case_seconds == 3 + 2 + 5
    assert settings.effective_shutdown_timeout == 15
    slow = make_settings(tmp_path, sms_read_timeout_seconds=20)
    assert slow.effective_shutdown_timeout == 3 + 2 + 20 + 5
    assert make_settings(tmp_path, shutdown_timeout_seconds=4).effective_shutdown_timeout == 4


def test_a_shutdown_timeout_shorter_than_one_sms_is_warned_about(tmp_path: Path) -> None:
    from otpgate.wiring import start_up_warnings

    short = [w for w in start_up_warnings(make_settings(tmp_path, shutdown_timeout_seconds=4))]
    assert any(w.startswith("SHUTDOWN_TIMEOUT_SECONDS: 4s is shorter") for w in short)
    assert not any(
        w.startswith("SHUTDOWN_TIMEOUT_SECONDS")
        for w in start_up_warnings(make_settings(tmp_path, shutdown_timeout_seconds=10))
    )
