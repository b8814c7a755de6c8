"""The real command in a real process: start-up, graceful SIGTERM, config refusal."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.http_stub import Received, Reply, StubServer, publish_ok
from tests.service_process import OTPGATE, ServiceProcess, service_env

pytestmark = pytest.mark.integration  # every test here starts `otpgate serve`


def test_sigterm_drains_in_flight_request(
    tmp_path: Path, stub_server: StubServer, fast_path: bool
) -> None:
    received, release = threading.Event(), threading.Event()

    def hold_publish(_: Received) -> Reply:
        # The SMS is genuinely in flight until the test lets it answer.
        received.set()
        release.wait(timeout=30)
        return publish_ok()

    stub_server.respond = hold_publish
    server = ServiceProcess(
        tmp_path,
        SMS_PROVIDER="sns",
        SNS_ENDPOINT_URL=stub_server.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        FAST_PATH=str(fast_path).lower(),  # the server protocol and Publish, or the stock ones
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
        assert received.wait(timeout=20), "the SMS never reached the provider"
        server.proc.send_signal(signal.SIGTERM)
        release.set()
        caller.join(timeout=20)
        assert result["r"].status_code == 200, result["r"].text
        # uvicorn re-raises SIGTERM after a clean shutdown, the usual convention.
        assert server.proc.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        out = server.stop()
    assert "Traceback" not in out, out
    assert "stopped: store and SMS client closed" in out, out


def _serve_once(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OTPGATE, "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_refuses_to_start_with_bad_config(tmp_path: Path) -> None:
    proc = _serve_once(tmp_path, service_env(tmp_path, PORT="not-a-port"))
    assert proc.returncode == 2
    assert "PORT" in proc.stderr


def test_production_without_hash_secret_refuses(tmp_path: Path) -> None:
    env = service_env(tmp_path, APP_ENV="production")
    env.pop("OTP_HASH_SECRET")
    proc = _serve_once(tmp_path, env)
    assert proc.returncode == 2
    assert "OTP_HASH_SECRET" in proc.stderr
