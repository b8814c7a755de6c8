"""The ``otpgate`` command, run as a real process from an empty directory.

Each run gets a minimal environment and a temporary working directory, so no
stray .env or variable of the machine running the tests is read.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FACTOR_KEYS
from tests.signing_keys import new_key, pem, thumbprint, write_keys

HASH_SECRET = "cli-test-hash-secret-" + "s" * 40
AWS_KEY_ID = "AKIAOTPGATECLITEST01"
AWS_SECRET = "cli/Test+Secret0123456789abcdefghijKLMN"
REDIS_PASSWORD = "hunter2-redis-password"


def base_env(cwd: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "LANG": "C.UTF-8",
        # The credential database (under cwd) made at start, as `make run` makes it.
        "DATABASE_MIGRATE_ON_START": "true",
    }


def otpgate(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otpgate", *args],
        cwd=cwd,
        env={**base_env(cwd), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_lists_commands_and_options(tmp_path: Path) -> None:
    top = otpgate(tmp_path, "--help")
    assert top.returncode == 0
    assert "serve" in top.stdout
    assert "check-config" in top.stdout
    serve = otpgate(tmp_path, "serve", "--help")
    assert serve.returncode == 0
    for option in ("--host", "--port", "--workers", "CPU count"):
        assert option in serve.stdout
    check = otpgate(tmp_path, "check-config", "--help")
    assert check.returncode == 0
    assert "redacted" in check.stdout


def test_check_config_prints_effective_settings_with_secrets_redacted(tmp_path: Path) -> None:
    signing, previous = new_key(), new_key()
    keys_file = write_keys(tmp_path / "token-keys.pem", signing, previous)
    result = otpgate(
        tmp_path,
        "check-config",
        env={
            "APP_ENV": "production",
            "FACTOR_ENCRYPTION_KEYS": FACTOR_KEYS,
            "OTP_HASH_SECRET": HASH_SECRET,
            "TOKEN_SIGNING_KEYS_FILE": str(keys_file),
            "TOKEN_AUDIENCE": "shop-api",
            "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0",
            "SMS_PROVIDER": "sns",
            "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
            "ALLOWED_COUNTRIES": "US,CA",
            "API_AUTH": "off",
            "METRICS_PORT": "9464",
            "WORKERS": "3",
        },
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "configuration OK" in out
    for secret in (HASH_SECRET, AWS_KEY_ID, AWS_SECRET, REDIS_PASSWORD):
        assert secret not in out
    for line in keys_file.read_text().splitlines():
        assert line.startswith("-----") or line not in out
    lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in out.splitlines()[2:] if line}
    assert lines["REDIS_URL"] == "redis://:****@127.0.0.1:6379/0"
    assert lines["OTP_HASH_SECRET"] == "<set, redacted>"
    assert lines["AWS_SECRET_ACCESS_KEY"] == "<set, redacted>"
    assert lines["AWS_ACCESS_KEY_ID"] == "<set, redacted>"
    assert lines["APP_ENV"] == "production"
    assert lines["METRICS_PORT"] == "9464"
    assert lines["WORKERS"] == "3"
    assert "/metrics on 127.0.0.1:9464" in out
    # The defaults: a code of 5 minutes, a send window of 10: the span is 10 minutes.
    assert "(store)                          redis, phone records span 10 min" in out
    assert lines["TOKEN_ISSUER"] == "otpgate"
    assert lines["TOKEN_AUDIENCE"] == "shop-api"
    assert lines["TOKEN_TTL_SECONDS"] == "300"
    assert lines["TOKEN_SIGNING_KEYS_FILE"] == str(keys_file)
    assert "(token keys published)           2 from TOKEN_SIGNING_KEYS_FILE" in out
    assert f"(token signing kid)              {thumbprint(signing)}" in out


def test_check_config_creates_no_development_key(tmp_path: Path) -> None:
    result = otpgate(tmp_path, "check-config")
    assert result.returncode == 0, result.stderr
    assert "(token signing kid)              <created at start-up>" in result.stdout
    assert not (tmp_path / ".otpgate").exists()


def test_check_config_refuses_an_unusable_key_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "token-keys.pem"
    keys_file.write_bytes(pem(new_key(ec.SECP384R1())))
    result = otpgate(tmp_path, "check-config", env={"TOKEN_SIGNING_KEYS_FILE": str(keys_file)})
    assert result.returncode == 2
    assert result.stderr.startswith("otpgate: TOKEN_SIGNING_KEYS_FILE: ")
    assert "P-384" in result.stderr
    assert "configuration OK" not in result.stdout


def test_check_config_reads_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=3100\nLOG_LEVEL=debug\n")
    result = otpgate(tmp_path, "check-config")
    assert result.returncode == 0, result.stderr
    assert "PORT                             3100" in result.stdout
    assert "LOG_LEVEL                        debug" in result.stdout


@pytest.mark.parametrize(
    ("env", "dotenv", "named"),
    [
        ({"PORT": "not-a-port"}, "", "PORT"),
        ({"APP_ENV": "production", "SMS_PROVIDER": "sns"}, "", "OTP_HASH_SECRET"),
        ({}, "LOG_LEVEL=loud\n", "LOG_LEVEL"),
        ({"METRICS_PORT": "3000"}, "", "METRICS_PORT"),
        ({"METRICS_ENABLED": "perhaps"}, "", "METRICS_ENABLED"),
    ],
    ids=["env", "production-guard", "dotenv", "metrics-port-clash", "bool"],
)
def test_check_config_refuses_a_bad_environment(
    tmp_path: Path, env: dict[str, str], dotenv: str, named: str
) -> None:
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    result = otpgate(tmp_path, "check-config", env=env)
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert f"{named}:" in result.stderr
    assert "configuration OK" not in result.stdout


def test_check_config_does_not_echo_a_bad_secret(tmp_path: Path) -> None:
    result = otpgate(
        tmp_path,
        "check-config",
        env={"APP_ENV": "production", "OTP_HASH_SECRET": "short-secret-value"},
    )
    assert result.returncode == 2
    assert "OTP_HASH_SECRET: must be at least 32 characters" in result.stderr
    assert "short-secret-value" not in result.stderr + result.stdout


# --- serve with several workers ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_count(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "otpgate_http_requests_total" and sample.labels == {
                "route": "/health",
                "status": "200",
            }:
                return sample.value
    return 0.0


@pytest.fixture
def serve_two_workers(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[dict[str, object]]:
    separate: bool = request.param
    port = free_port()
    metrics_port = free_port() if separate else None
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {
        **base_env(tmp_path),
        "TMPDIR": str(tmpdir),
        "LOG_LEVEL": "warning",
        "OTP_HASH_SECRET": HASH_SECRET,
    }
    if metrics_port is not None:
        env["METRICS_PORT"] = str(metrics_port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpgate", "serve", "--workers", "2", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    info: dict[str, object] = {
        "url": f"http://127.0.0.1:{port}",
        "metrics_url": f"http://127.0.0.1:{metrics_port or port}/metrics",
        "tmpdir": tmpdir,
        "proc": proc,
        "health_ok": 0,
    }
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # Wait for the answer: a request given up on while its worker still starts
                # is served (and counted) later, and the count below would be off by one.
                if httpx.get(f"{info['url']}/health", timeout=20).status_code == 200:
                    info["health_ok"] = 1
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                output = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"otpgate serve did not start:\n{output}", pytrace=False)
            time.sleep(0.1)
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.mark.parametrize(
    "serve_two_workers", [False, True], ids=["on-api-port", "separate-port"], indirect=True
)
def test_serve_workers_count_into_one_scrape(serve_two_workers: dict[str, object]) -> None:
    info = serve_two_workers
    tmpdir = info["tmpdir"]
    assert isinstance(tmpdir, Path)
    made = list(tmpdir.glob("otpgate-metrics-*"))
    assert len(made) == 1, "serve makes one metrics directory for its workers"
    # Both workers count into it: each creates its files as its app starts.
    deadline = time.monotonic() + 10
    pids: set[str] = set()
    # The supervisor, which serves METRICS_PORT, may hold files of zeros of its own.
    supervisor = {str(info["proc"].pid)}  # type: ignore[attr-defined]
    while len(pids) < 2 and time.monotonic() < deadline:
        pids = {f.stem.rsplit("_", 1)[1] for f in made[0].glob("counter_*.db")} - supervisor
        time.sleep(0.1)
    assert len(pids) == 2

    sent = int(str(info["health_ok"]))
    for _ in range(40):  # a new connection each: the kernel spreads them over the workers
        assert httpx.get(f"{info['url']}/health", timeout=5).status_code == 200
        sent += 1
    # Each worker adds its counts to the shared files once a second.
    deadline = time.monotonic() + 10
    while True:
        scrape = httpx.get(str(info["metrics_url"]), timeout=5)
        assert scrape.status_code == 200
        counted = health_count(scrape.text)
        assert counted <= sent
        if counted == sent or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counted == sent
    if info["metrics_url"] != f"{info['url']}/metrics":
        assert httpx.get(f"{info['url']}/metrics", timeout=5).status_code == 404

    proc = info["proc"]
    assert isinstance(proc, subprocess.Popen)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    assert not made[0].exists(), "the metrics directory is removed at exit"


def test_a_given_metrics_directory_is_made_and_cleared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otpgate.cli import _metrics_dir
    from tests.conftest import make_settings

    given = tmp_path / "metrics" / "here"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    with _metrics_dir(make_settings(tmp_path), workers=4):
        assert given.is_dir()
        (given / "counter_123.db").write_bytes(b"stale")
    with _metrics_dir(make_settings(tmp_path), workers=4):
        # An earlier run's numbers would be added to this one's: they are removed.
        assert list(given.iterdir()) == []
    assert given.is_dir(), "a directory the operator chose is kept"


def test_one_worker_needs_no_metrics_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otpgate.cli import _metrics_dir
    from tests.conftest import make_settings

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with _metrics_dir(make_settings(tmp_path), workers=1):
        assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    with _metrics_dir(make_settings(tmp_path), workers=2):
        made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert made.is_dir()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert not made.exists()
