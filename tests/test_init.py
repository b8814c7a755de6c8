"""``otpgate init DIR``, then ``otpgate check-config`` for production, run as processes
from an empty directory (tests/test_cli.py's ``otpgate``, with its minimal environment)."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from otpgate.config.hash_key import load_hash_key
from otpgate.config.settings import Settings
from otpgate.tokens.keys import load_keys
from tests.test_cli import otpgate

FILES = {
    "hash-secret",
    "token-signing-keys.pem",
    "api-key",
    "admin-api-key",
    "factor-encryption-key",
}
# What production refuses to start without, each named in one run of check-config.
PRODUCTION_NEEDS = (
    "ALLOWED_COUNTRIES",
    "API_AUTH",
    "OTP_HASH_SECRET",
    "TOKEN_SIGNING_KEYS_FILE",
    "FACTOR_ENCRYPTION_KEYS",
)


def settings_of(printed: str) -> dict[str, str]:
    """The printed lines as variables (comments left out), as a .env would read them."""
    pairs = (line.split("=", 1) for line in printed.splitlines() if line and line[0] != "#")
    return {name: value for name, value in pairs}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_then_check_config_passes_in_production(tmp_path: Path) -> None:
    made = otpgate(tmp_path, "init", "secrets")
    assert made.returncode == 0, made.stderr
    directory = tmp_path / "secrets"
    assert {p.name for p in directory.iterdir()} == FILES
    assert mode(directory) == 0o700
    for path in directory.iterdir():
        assert mode(path) == 0o600, path

    printed = settings_of(made.stdout)
    assert printed["APP_ENV"] == "production"
    assert printed["API_AUTH"] == "required"
    assert printed["ALLOWED_COUNTRIES"] == ""  # for the operator to fill
    assert printed["OTP_HASH_SECRET_FILE"] == str(directory / "hash-secret")
    assert printed["TOKEN_SIGNING_KEYS_FILE"] == str(directory / "token-signing-keys.pem")
    assert load_keys(directory / "token-signing-keys.pem").signing.kid
    # The keys are configured by their SHA-256: what is printed holds no secret.
    for variable, file in (("API_KEYS", "api-key"), ("ADMIN_API_KEYS", "admin-api-key")):
        key = (directory / file).read_text().strip()
        assert len(key) >= 32
        digest = hashlib.sha256(key.encode()).hexdigest()
        assert printed[variable].endswith(f":sha256:{digest}")
    for file in FILES - {"token-signing-keys.pem"}:
        assert (directory / file).read_text().strip() not in made.stdout

    # As printed, the one thing left to fill is refused, alone.
    unfilled = otpgate(tmp_path, "check-config", env=printed)
    assert unfilled.returncode == 2
    assert "ALLOWED_COUNTRIES" in unfilled.stderr
    assert not {"API_AUTH:", "OTP_HASH_SECRET", "TOKEN_SIGNING_KEYS_FILE:"} & set(
        unfilled.stderr.split()
    )

    checked = otpgate(tmp_path, "check-config", env={**printed, "ALLOWED_COUNTRIES": "US,GB"})
    assert checked.returncode == 0, checked.stderr
    assert "configuration OK" in checked.stdout
    # The key files sit in a .env just as well.
    (tmp_path / ".env").write_text(made.stdout.replace("ALLOWED_COUNTRIES=", "ALLOWED_COUNTRIES=*"))
    from_dotenv = otpgate(tmp_path, "check-config")
    assert from_dotenv.returncode == 0, from_dotenv.stderr


def test_the_verify_v2_account_is_written_when_asked_for(tmp_path: Path) -> None:
    made = otpgate(tmp_path, "init", "secrets", "--verify-v2", "Acme")
    assert made.returncode == 0, made.stderr
    printed = settings_of(made.stdout)
    token = (tmp_path / "secrets" / "verify-v2-auth-token").read_text().strip()
    assert mode(tmp_path / "secrets" / "verify-v2-auth-token") == 0o600
    assert printed["VERIFY_V2_AUTH_TOKEN"] == "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    assert printed["VERIFY_V2_SERVICES"].endswith(":Acme")
    checked = otpgate(tmp_path, "check-config", env={**printed, "ALLOWED_COUNTRIES": "*"})
    assert checked.returncode == 0, checked.stderr
    assert "VERIFY_V2_ACCOUNT_SID" in checked.stdout


def test_init_never_overwrites_a_file(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "api-key").write_text("the key a backend already uses\n")
    refused = otpgate(tmp_path, "init", str(directory))
    assert refused.returncode == 2
    assert str(directory / "api-key") in refused.stderr
    assert "overwrite" in refused.stderr
    # Nothing written, the existing file untouched.
    assert [p.name for p in directory.iterdir()] == ["api-key"]
    assert (directory / "api-key").read_text() == "the key a backend already uses\n"
    assert refused.stdout == ""

    again = tmp_path / "again"
    assert otpgate(tmp_path, "init", str(again)).returncode == 0
    before = {p.name: p.read_bytes() for p in again.iterdir()}
    second = otpgate(tmp_path, "init", str(again))
    assert second.returncode == 2
    for name in FILES:
        assert str(again / name) in second.stderr
    assert {p.name: p.read_bytes() for p in again.iterdir()} == before


def test_a_bad_verify_v2_name_writes_nothing(tmp_path: Path) -> None:
    refused = otpgate(tmp_path, "init", "secrets", "--verify-v2", "a,b")
    assert refused.returncode == 2
    assert "friendly name" in refused.stderr
    assert not (tmp_path / "secrets").exists()


def test_check_config_names_every_missing_production_setting_in_one_run(tmp_path: Path) -> None:
    bare = otpgate(tmp_path, "check-config", env={"APP_ENV": "production"})
    assert bare.returncode == 2
    for name in PRODUCTION_NEEDS:
        assert f"\n  {name}:" in bare.stderr, (name, bare.stderr)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ALLOWED_COUNTRIES", ""), ("API_KEYS", "short:key"), ("PORT", "http")],
)
def test_a_refused_variable_hides_none_of_the_missing_ones(
    tmp_path: Path, variable: str, value: str
) -> None:
    """pydantic skips the checks that span variables when one variable is refused: the
    run still names every other missing setting, and each problem once."""
    env = {"APP_ENV": "production", "API_AUTH": "required", "ADMIN_PORT": "9100", variable: value}
    refused = otpgate(tmp_path, "check-config", env=env)
    assert refused.returncode == 2
    lines = [line.strip() for line in refused.stderr.splitlines()[1:]]
    named = [line.split(":", 1)[0] for line in lines]
    assert variable in named
    expected = {"OTP_HASH_SECRET", "TOKEN_SIGNING_KEYS_FILE", "ADMIN_PORT"}
    expected |= {"ALLOWED_COUNTRIES"} if variable != "ALLOWED_COUNTRIES" else set()
    expected |= {"API_AUTH"} if variable != "API_KEYS" else set()
    assert expected <= set(named), refused.stderr
    assert named.count(variable) == 1, refused.stderr


def test_production_reads_the_hash_key_file_it_is_given_and_never_makes_one(
    tmp_path: Path,
) -> None:
    made = otpgate(tmp_path, "init", "secrets")
    env = {**settings_of(made.stdout), "ALLOWED_COUNTRIES": "*"}
    missing = tmp_path / "secrets" / "elsewhere"
    refused = otpgate(tmp_path, "check-config", env={**env, "OTP_HASH_SECRET_FILE": str(missing)})
    assert refused.returncode == 2
    assert f"OTP_HASH_SECRET_FILE: cannot read {missing}" in refused.stderr
    assert not missing.exists()
    (tmp_path / "short").write_text("too short\n")
    short = otpgate(
        tmp_path, "check-config", env={**env, "OTP_HASH_SECRET_FILE": str(tmp_path / "short")}
    )
    assert short.returncode == 2
    assert "shorter than 32 characters" in short.stderr


def test_production_reads_the_key_file_and_never_writes_one(tmp_path: Path) -> None:
    """Development makes a missing key file; production, where every instance sharing the
    store needs the same key, refuses instead (a file gone after start-up checks)."""
    made = otpgate(tmp_path, "init", "secrets")
    env = {k.lower(): v for k, v in settings_of(made.stdout).items()}
    settings = Settings(_env_file=None, **{**env, "allowed_countries": "*"})  # type: ignore[arg-type]
    key_file = tmp_path / "secrets" / "hash-secret"
    assert load_hash_key(settings) == key_file.read_text().strip().encode()
    key_file.unlink()
    with pytest.raises(FileNotFoundError):
        load_hash_key(settings)
    assert not key_file.exists()
