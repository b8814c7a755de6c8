"""The operators' settings: ADMIN_API_KEYS never shares a key with the API, ADMIN_PORT
stands apart from every other port, and check-config names admin keys, never more."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from otpgate.cli.config_report import describe
from otpgate.config.settings import ConfigError, load_settings
from tests.conftest import HASH_SECRET, make_settings

ADMIN_KEY = "admin-key-" + "a" * 32
OTHER_ADMIN_KEY = "admin-key-" + "b" * 32
ADMIN_KEYS = f"ops:{ADMIN_KEY},oncall:sha256:{hashlib.sha256(OTHER_ADMIN_KEY.encode()).hexdigest()}"


def settings_error(tmp_path: Path, **values: Any) -> str:
    with pytest.raises(ConfigError) as refused:
        load_settings(
            _env_file=None,
            otp_hash_secret=HASH_SECRET,
            token_dev_key_file=tmp_path / "key.pem",
            **values,
        )
    return str(refused.value)


@pytest.mark.parametrize(
    "api_keys",
    [
        f"backend:{ADMIN_KEY}",
        f"backend:sha256:{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}",
    ],
)
def test_an_admin_key_that_is_also_an_api_key_is_refused(tmp_path: Path, api_keys: str) -> None:
    message = settings_error(tmp_path, admin_api_keys=ADMIN_KEYS, api_keys=api_keys)
    assert "ADMIN_API_KEYS: entry 1 (ops) is also a key in API_KEYS" in message
    assert ADMIN_KEY not in message
    assert hashlib.sha256(ADMIN_KEY.encode()).hexdigest() not in message


def test_an_admin_key_that_is_the_verify_v2_token_is_refused(tmp_path: Path) -> None:
    message = settings_error(
        tmp_path,
        admin_api_keys=ADMIN_KEYS,
        verify_v2_account_sid="AC" + "0" * 32,
        verify_v2_auth_token=OTHER_ADMIN_KEY,
        verify_v2_services="VA" + "0" * 32 + ":Shop",
    )
    assert "ADMIN_API_KEYS: entry 2 (oncall) is also a key in VERIFY_V2_AUTH_TOKEN" in message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"admin_port": 9100}, "ADMIN_PORT: set without ADMIN_API_KEYS"),
        ({"admin_port": 3000, "admin_api_keys": ADMIN_KEYS}, "ADMIN_PORT: must differ from PORT"),
        (
            {"admin_port": 9100, "metrics_port": 9100, "admin_api_keys": ADMIN_KEYS},
            "ADMIN_PORT: must differ from METRICS_PORT",
        ),
        ({"admin_port": 0, "admin_api_keys": ADMIN_KEYS}, "ADMIN_PORT:"),
        ({"admin_api_keys": "ops:short"}, "ADMIN_API_KEYS: entry 1: the key must be at least 32"),
    ],
)
def test_bad_admin_settings_are_refused_by_name(
    tmp_path: Path, values: dict[str, Any], expected: str
) -> None:
    assert expected in settings_error(tmp_path, **values)


def test_check_config_names_admin_keys_never_their_digests(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, admin_api_keys=ADMIN_KEYS, admin_port=9100)
    report = describe(settings)
    lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in report.splitlines()[2:]}
    assert lines["ADMIN_API_KEYS"] == "ops, oncall"
    assert "(admin)                          /admin/v1/ and /admin on 127.0.0.1:9100 only" in report
    for key in (ADMIN_KEY, OTHER_ADMIN_KEY):
        assert key not in report
        assert hashlib.sha256(key.encode()).hexdigest()[:16] not in report
    off = describe(make_settings(tmp_path))
    assert "(admin)                          off (no ADMIN_API_KEYS)" in off
