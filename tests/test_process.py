"""The real command in a real process: start-up, graceful SIGTERM, config refusal."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.sns_stub import HeldSns

OTPGATE = [sys.executable, "-m", "otpgate"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTP", "SMS_", "SNS_"))}
    env.pop("REDIS_URL", None)
    env.update(
        APP_ENV="development",
        SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        OTP_HASH_SECRET="p" * 40,
        LOG_LEVEL="info",
        HOST="127.0.0.1",
    )
    env.update(extra)
    return env


class Server:
    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*OTPGATE, "serve", "--workers", "1", "--port", str(self.port)],
            env=_env(tmp_path, **env),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        # Bounded readiness poll; a process that died reports its output.
        for _ in range(300):
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                pytest.fail(f"otpgate exited during start-up:\n{out}")
            try:
                if httpx.get(f"{self.base}/health", timeout=0.2).status_code == 200:
                    return
            except httpx.TransportError:
                self.proc_wait(0.05)
        pytest.fail("otpgate did not answer /health")

    def proc_wait(self, seconds: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=seconds)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        out, _ = self.proc.communicate(timeout=10)
        return out.decode() if out else ""


@pytest.fixture
def held() -> Iterator[HeldSns]:
    with HeldSns() as stub:
        yield stub


def test_sigterm_drains_in_flight_request(tmp_path: Path, held: HeldSns) -> None:
    server = Server(
        tmp_path,
        SMS_PROVIDER="sns",
        SNS_ENDPOINT_URL=held.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    try:
        server.wait_ready()
        result: dict[str, httpx.Response] = {}

        def call() -> None:
            result["r"] = httpx.post(
                f"{server.base}/api/v1/request-otp",
                json={"phoneNumber": "+12125550199"},
                timeout=20,
            )

        caller = threading.Thread(target=call)
        caller.start()
        assert held.received.wait(timeout=20), "the SMS never reached the provider"
        server.proc.send_signal(signal.SIGTERM)
        held.release.set()
        caller.join(timeout=20)
        assert result["r"].status_code == 200, result["r"].text
        # uvicorn re-raises SIGTERM after a clean shutdown, the usual convention.
        assert server.proc.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        out = server.stop()
    assert "Traceback" not in out, out
    assert "stopped: store and SMS client closed" in out, out


def test_refuses_to_start_with_bad_config(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*OTPGATE, "serve"],
        env=_env(tmp_path, PORT="not-a-port"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "PORT" in proc.stderr


def test_production_without_hash_secret_refuses(tmp_path: Path) -> None:
    env = _env(tmp_path, APP_ENV="production")
    env.pop("OTP_HASH_SECRET")
    proc = subprocess.run(
        [*OTPGATE, "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "OTP_HASH_SECRET" in proc.stderr
