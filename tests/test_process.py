"""The real command in a real process: start-up, graceful SIGTERM, config refusal."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from otpgate.domain.errors import SentBeforeShutdown
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


def test_serve_says_where_it_listens_and_where_the_docs_are(tmp_path: Path) -> None:
    server = ServiceProcess(tmp_path, workers=2)
    try:
        server.wait_ready()
    finally:
        out = server.stop()
    assert f"listening on {server.base} with 2 worker(s)" in out
    assert f"API docs at {server.base}/docs" in out


def test_sigterm_past_the_timeout_answers_every_request_and_refuses_new_ones(
    tmp_path: Path, stub_server: StubServer
) -> None:
    """A provider slower than the shutdown timeout: 200 or a JSON 503 each, never a 500;
    connections opened after SIGTERM, as fast as a loop can, are answered or refused,
    never reset: each worker stops taking new ones and accepts its queue before it
    closes its socket, and answers the first request of one it just accepted."""
    release = threading.Event()

    def slow_publish(_: Received) -> Reply:
        release.wait(timeout=30)
        return publish_ok()

    stub_server.respond = slow_publish
    in_flight = 12
    server = ServiceProcess(
        tmp_path,
        workers=2,
        SMS_PROVIDER="sns",
        SNS_ENDPOINT_URL=stub_server.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        SMS_READ_TIMEOUT_SECONDS="30",
        SHUTDOWN_TIMEOUT_SECONDS="1",
        RATE_LIMIT_MAX_REQUESTS="1000",
        IP_MAX_PHONES="1000",
        LOG_FORMAT="json",
    )
    answers: list[httpx.Response | Exception] = []

    def call(i: int) -> None:
        try:
            answers.append(
                httpx.post(
                    f"{server.base}/api/v1/request-otp",
                    json={"phoneNumber": f"+12125550{i:03d}"},
                    timeout=30,
                )
            )
        except Exception as exc:
            answers.append(exc)

    callers = [threading.Thread(target=call, args=(110 + i,)) for i in range(in_flight)]
    refused = reset = served = closed_unanswered = 0
    try:
        server.wait_ready()
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 20
        while stub_server.count < in_flight and time.monotonic() < deadline:
            stub_server.wait_closed(0, timeout=0.05)  # just a bounded pause between looks
        assert stub_server.count == in_flight, "the sends never reached the provider"
        server.proc.send_signal(signal.SIGTERM)
        # New connections until the service is gone: each is answered or refused.
        while server.proc.poll() is None:
            try:
                conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            except ConnectionRefusedError:
                refused += 1
                continue
            with conn:
                try:
                    conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if conn.recv(1024).startswith(b"HTTP/1.1 200 "):
                        served += 1
                    else:
                        closed_unanswered += 1
                except (ConnectionResetError, TimeoutError, BrokenPipeError):
                    reset += 1
        for caller in callers:
            caller.join(timeout=30)
    finally:
        release.set()
        out = server.stop()
    assert refused > 0, (refused, served, reset, closed_unanswered)
    assert reset + closed_unanswered == 0, (refused, served, reset, closed_unanswered)
    statuses = sorted(a.status_code if isinstance(a, httpx.Response) else -1 for a in answers)
    assert len(statuses) == in_flight and set(statuses) <= {200, 503}, (statuses, out)
    for answer in answers:
        assert isinstance(answer, httpx.Response)
        if answer.status_code == 503:
            # Every send had reached the provider: each answer says its code was sent,
            # and to wait out the resend cooldown (OTP_RESEND_COOLDOWN_SECONDS, 60).
            assert answer.json()["code"] == "shutting_down"
            assert answer.json()["message"] == SentBeforeShutdown.message
            assert 50 <= int(answer.headers["retry-after"]) <= 60, answer.headers
    assert "Traceback" not in out and "Exception in ASGI application" not in out, out
