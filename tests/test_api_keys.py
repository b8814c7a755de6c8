"""API keys as the HTTP layer gets them: names and digests, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from otpgate.cli.config_report import describe
from otpgate.config import api_keys
from otpgate.config.api_keys import ApiAuth
from otpgate.wiring import api_auth
from tests.conftest import make_settings

PLAIN_KEY = "ci-" + "Zq7xK2pL" * 5
HASHED_KEY = "web-" + "Rt5mW9vB" * 5
OTHER_KEY = "ops-" + "Hy3nQ8cD" * 5


def auth(tmp_path: Path, mode: str = "optional") -> ApiAuth:
    digest = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
    return api_auth(
        make_settings(
            tmp_path,
            api_auth=mode,
            api_keys=f"ci:{PLAIN_KEY},web:sha256:{digest},ops:{OTHER_KEY}",
        )
    )


def test_each_form_of_key_is_known_by_its_name(tmp_path: Path) -> None:
    keys = auth(tmp_path)
    assert keys.names == ("ci", "web", "ops")
    assert keys.name_of(PLAIN_KEY.encode()) == "ci"
    assert keys.name_of(HASHED_KEY.encode()) == "web"
    assert keys.name_of(OTHER_KEY.encode()) == "ops"


@pytest.mark.parametrize(
    "presented",
    [
        b"",
        PLAIN_KEY[:-1].encode(),
        (PLAIN_KEY + "x").encode(),
        PLAIN_KEY.upper().encode(),
        hashlib.sha256(HASHED_KEY.encode()).hexdigest().encode(),  # its digest is no key
        b"sha256:" + hashlib.sha256(HASHED_KEY.encode()).hexdigest().encode(),
    ],
)
def test_anything_else_is_no_key(tmp_path: Path, presented: bytes) -> None:
    assert auth(tmp_path).name_of(presented) is None


def test_every_digest_is_compared_whichever_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = auth(tmp_path)
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", compare_digest)
    for presented in (PLAIN_KEY, HASHED_KEY, OTHER_KEY, "no such key"):
        compared.clear()
        keys.name_of(presented.encode())
        # The presented key's digest, against each configured digest, no early exit.
        assert [b for _, b in compared] == [digest for digest, _ in keys.keys]
        assert {a for a, _ in compared} == {hashlib.sha256(presented.encode()).digest()}


def test_the_config_object_holds_no_key(tmp_path: Path) -> None:
    keys = auth(tmp_path, mode="required")
    assert keys.required and keys.mode == "required"
    text = repr(keys) + repr(keys.keys)
    for key in (PLAIN_KEY, HASHED_KEY, OTHER_KEY):
        assert key not in text
    assert "digest" not in repr(keys) and "keys=" not in repr(keys)  # digests left out too


def test_modes_other_than_required_require_nothing(tmp_path: Path) -> None:
    assert not auth(tmp_path, "optional").required
    assert not auth(tmp_path, "off").required
    assert api_auth(make_settings(tmp_path)) == ApiAuth("off", ())


def test_check_config_shows_the_mode_and_names_never_keys(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        api_auth="required",
        api_keys=f"ci:{PLAIN_KEY},web:sha256:{hashlib.sha256(HASHED_KEY.encode()).hexdigest()}",
    )
    report = describe(settings)
    lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in report.splitlines()[2:]}
    assert lines["API_KEYS"] == "ci, web"
    assert lines["API_AUTH"] == "required"
    assert "  (api auth)                       required (2 keys: ci, web)" in report
    for key in (PLAIN_KEY, HASHED_KEY):
        digest = hashlib.sha256(key.encode()).hexdigest()
        assert key not in report and digest not in report and digest[:16] not in report


def test_check_config_without_keys(tmp_path: Path) -> None:
    report = describe(make_settings(tmp_path))
    lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in report.splitlines()[2:]}
    assert (lines["API_KEYS"], lines["API_AUTH"]) == ("<none>", "<unset>")
    assert "  (api auth)                       off (0 keys)" in report
