"""Start-up refuses bad or unsafe configuration, naming the variable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from otpgate.config.settings import ConfigError, Settings, load_settings
from tests.conftest import FACTOR_KEYS, make_settings

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
        FACTOR_ENCRYPTION_KEYS=FACTOR_KEYS,
        OTP_HASH_SECRET=SECRET,
        TOKEN_SIGNING_KEYS_FILE=KEYS_FILE,
        ALLOWED_COUNTRIES="US,CA",
        API_AUTH="off",
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
        load(
            monkeypatch,
            APP_ENV="production",
            FACTOR_ENCRYPTION_KEYS=FACTOR_KEYS,
            OTP_HASH_SECRET=SECRET,
            ALLOWED_COUNTRIES="US",
            API_AUTH="off",
        )
    assert "TOKEN_SIGNING_KEYS_FILE: required when APP_ENV=production" in str(info.value)
    s = load(
        monkeypatch,
        APP_ENV="production",
        FACTOR_ENCRYPTION_KEYS=FACTOR_KEYS,
        OTP_HASH_SECRET=SECRET,
        ALLOWED_COUNTRIES="US",
        API_AUTH="off",
        TOKEN_SIGNING_KEYS_FILE=KEYS_FILE,
    )
    assert s.token_signing_keys_file == Path(KEYS_FILE)


def test_production_refuses_short_hash_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="OTP_HASH_SECRET") as info:
        load(
            monkeypatch,
            APP_ENV="production",
            FACTOR_ENCRYPTION_KEYS=FACTOR_KEYS,
            OTP_HASH_SECRET="short",
        )
    assert "short" not in str(info.value).replace("shorter", "")


def test_production_requires_an_explicit_country_list(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="ALLOWED_COUNTRIES"):
        load(
            monkeypatch,
            APP_ENV="production",
            FACTOR_ENCRYPTION_KEYS=FACTOR_KEYS,
            OTP_HASH_SECRET=SECRET,
        )
    everywhere = load(
        monkeypatch,
        APP_ENV="production",
        FACTOR_ENCRYPTION_KEYS=FACTOR_KEYS,
        OTP_HASH_SECRET=SECRET,
        ALLOWED_COUNTRIES="*",
        API_AUTH="off",
        TOKEN_SIGNING_KEYS_FILE=KEYS_FILE,
    )
    assert everywhere.allowed_regions is None
    some = load(monkeypatch, ALLOWED_COUNTRIES="us, gb")
    assert some.allowed_regions == frozenset({"US", "GB"})


def test_country_budgets_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch, COUNTRY_SMS_BUDGETS="us=500, GB=20")
    assert s.country_sms_budgets == {"US": 500, "GB": 20}


def test_production_refuses_console_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="SMS_PROVIDER"):
        load(
            monkeypatch,
            APP_ENV="production",
            FACTOR_ENCRYPTION_KEYS=FACTOR_KEYS,
            OTP_HASH_SECRET=SECRET,
            SMS_PROVIDER="console",
        )


def test_error_never_echoes_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        load(
            monkeypatch,
            APP_ENV="production",
            FACTOR_ENCRYPTION_KEYS=FACTOR_KEYS,
            OTP_HASH_SECRET="tiny-secret-value",
        )
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


# --- API keys --------------------------------------------------------------------------------

PLAIN_KEY = "ci-" + "Zq7xK2pL" * 5  # 43 characters
HASHED_KEY = "web-" + "Rt5mW9vB" * 5
HASHED_DIGEST = hashlib.sha256(HASHED_KEY.encode()).hexdigest()


def test_api_keys_keep_names_and_digests_only(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch, API_KEYS=f" ci:{PLAIN_KEY} , web:sha256:{HASHED_DIGEST},")
    assert s.api_keys == {
        "ci": hashlib.sha256(PLAIN_KEY.encode()).hexdigest(),
        "web": HASHED_DIGEST,
    }
    assert PLAIN_KEY not in repr(s) and PLAIN_KEY not in s.model_dump_json()


def test_api_auth_is_off_and_keyless_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch)
    assert (s.api_auth, s.effective_api_auth, s.api_keys) == (None, "off", {})
    assert load(monkeypatch, API_AUTH="").api_auth is None  # blank in a .env: unset


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (PLAIN_KEY, "entry 1 is not name:key"),
        (f"ci:{PLAIN_KEY[:31]}", "entry 1: the key must be at least 32 characters"),
        (f":{PLAIN_KEY}", "entry 1 is not name:key"),
        (f"c i:{PLAIN_KEY}", "entry 1: the name must be letters, digits"),
        (f"ci/prod:{PLAIN_KEY}", "entry 1: the name must be letters, digits"),
        (f"ci:{PLAIN_KEY},ci:{HASHED_KEY}", "entry 2 repeats the name"),
        (f"ci:{PLAIN_KEY},web:{PLAIN_KEY}", "entry 2 repeats the key"),
        (
            f"ci:{PLAIN_KEY},web:sha256:{hashlib.sha256(PLAIN_KEY.encode()).hexdigest()}",
            "entry 2 repeats the key",
        ),
        (f"ci:{PLAIN_KEY[:20]} {PLAIN_KEY[20:]}", "entry 1: the key must be visible ASCII"),
        (f"ci:{PLAIN_KEY}é", "entry 1: the key must be visible ASCII"),
        (f"web:sha256:{HASHED_DIGEST.upper()}", "entry 1: after sha256: must come"),
        (f"web:sha256:{HASHED_DIGEST[:-1]}", "entry 1: after sha256: must come"),
        (f"web:sha256:{PLAIN_KEY}", "entry 1: after sha256: must come"),
    ],
)
def test_a_bad_api_key_entry_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, entry: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(monkeypatch, API_KEYS=entry)
    message = str(info.value)
    assert f"API_KEYS: {reason}" in message
    for secret in (PLAIN_KEY, PLAIN_KEY[:20], PLAIN_KEY[20:], HASHED_KEY, HASHED_DIGEST):
        assert secret not in message
        assert secret.upper() not in message


def test_a_refused_key_is_not_in_the_validation_error_either(tmp_path: Path) -> None:
    """Whoever prints the raw error (not load_settings' message) still sees no key."""
    short = HASHED_KEY[:31]
    with pytest.raises(ValidationError) as info:
        make_settings(tmp_path, api_keys=f"ci:{PLAIN_KEY},web:{short}")
    text = str(info.value) + repr(info.value)
    assert "entry 2: the key must be at least 32 characters" in text
    # pydantic shows a long input by its two ends: neither may be there.
    for fragment in (PLAIN_KEY[:12], short[-12:]):
        assert fragment not in text


def test_api_auth_accepts_only_its_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    for mode in ("off", "optional"):
        assert load(monkeypatch, API_AUTH=mode).effective_api_auth == mode
    with pytest.raises(ConfigError, match="API_AUTH"):
        load(monkeypatch, API_AUTH="on")


def test_required_api_auth_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="API_AUTH: 'required' needs at least one key"):
        load(monkeypatch, API_AUTH="required")
    s = load(monkeypatch, API_AUTH="required", API_KEYS=f"ci:{PLAIN_KEY}")
    assert s.effective_api_auth == "required"


def test_production_refuses_to_start_until_api_auth_is_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ready = {
        "APP_ENV": "production",
        "FACTOR_ENCRYPTION_KEYS": FACTOR_KEYS,
        "OTP_HASH_SECRET": SECRET,
        "ALLOWED_COUNTRIES": "US",
        "TOKEN_SIGNING_KEYS_FILE": KEYS_FILE,
    }
    with pytest.raises(ConfigError) as info:
        load(monkeypatch, **ready)
    assert "API_AUTH: required when APP_ENV=production" in str(info.value)
    assert "ALLOWED_COUNTRIES" not in str(info.value)  # only what is missing is named
    for mode in ("off", "optional"):
        assert load(monkeypatch, **ready, API_AUTH=mode).effective_api_auth == mode
    with pytest.raises(ConfigError, match="API_AUTH: 'required' needs at least one key"):
        load(monkeypatch, **ready, API_AUTH="required")
    keyed = load(monkeypatch, **ready, API_AUTH="required", API_KEYS=f"ci:{PLAIN_KEY}")
    assert keyed.effective_api_auth == "required"


def test_optional_api_auth_without_keys_is_warned_about(tmp_path: Path) -> None:
    from otpgate.wiring import start_up_warnings

    def auth_warnings(**overrides: str) -> list[str]:
        warnings = start_up_warnings(make_settings(tmp_path, **overrides))
        return [w for w in warnings if w.startswith("API_AUTH")]

    assert auth_warnings(api_auth="optional") == [
        "API_AUTH: optional with no API_KEYS: no key can be valid, so every request "
        "that sends one is refused (401)"
    ]
    assert auth_warnings(api_auth="optional", api_keys=f"ci:{PLAIN_KEY}") == []
    assert auth_warnings(api_auth="off") == []
