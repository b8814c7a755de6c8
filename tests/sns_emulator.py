"""An SNS emulator (moto's server) on a free loopback port, for the real client.

The tests start it themselves; it needs nothing from outside this machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
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
