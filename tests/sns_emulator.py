"""An SNS emulator (moto's server) on a free loopback port, for the real client.

The tests start it themselves; it needs nothing from outside this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from botocore.session import get_session
from moto.moto_server.threaded_moto_server import ThreadedMotoServer


@dataclass(frozen=True)
class SnsEmulator:
    url: str

    def messages(self) -> list[dict[str, str]]:
        """Every SMS moto received: ``{"phone_number", "message", "message_id"}``."""
        data = httpx.get(f"{self.url}/moto-api/data.json", timeout=5).json()
        return list(data.get("sns", {}).get("SMS", []))

    def last_message(self, phone: str) -> dict[str, str]:
        sent = [m for m in self.messages() if m["phone_number"] == phone]
        assert sent, f"the emulator received no SMS for {phone}"
        return sent[-1]

    def reset(self) -> None:
        httpx.post(f"{self.url}/moto-api/reset", timeout=5).raise_for_status()


@pytest.fixture(scope="session")
def sns_emulator() -> Iterator[SnsEmulator]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield SnsEmulator(url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def sns_settings(sns_emulator: SnsEmulator) -> dict[str, object]:
    """Settings overrides that send through the real SNS client to the emulator."""
    return {
        "sms_provider": "sns",
        "sns_endpoint_url": sns_emulator.url,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "aws_region": "us-east-1",
    }


@dataclass(frozen=True)
class SigningSnsEmulator(SnsEmulator):
    """moto checking every request's signature, and the keys of a user allowed to publish."""

    access_key_id: str
    secret_access_key: str


# The calls that set up the user are the only ones moto takes unsigned.
_SETUP_CALLS = 3


@pytest.fixture(scope="session")
def signing_sns_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningSnsEmulator]:
    """A moto server of its own (the setting is read at import, so another process) that
    refuses any request whose signature it cannot verify, as AWS does."""
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_CALLS)}
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/moto-api/data.json", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the signing SNS emulator did not start", pytrace=False)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)  # a bounded pause that ends early if it exits
        iam = get_session().create_client(
            "iam",
            region_name="us-east-1",
            endpoint_url=url,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="otpgate")
        iam.put_user_policy(
            UserName="otpgate",
            PolicyName="publish-sms",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "sns:Publish", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="otpgate")["AccessKey"]
        yield SigningSnsEmulator(url, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
