"""What a request cut off by the shutdown timeout is answered, in process.

The server cancels the requests still in flight when its shutdown timeout runs out;
here the test cancels the request's task instead, at a chosen step. Once the code was
handed to the provider, the answer says it was sent and carries what is left of the
resend cooldown, which is what a retry would be refused with; before that, it is the
plain "try again" with Retry-After 1.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from otpgate.domain.errors import SentBeforeShutdown
from otpgate.domain.ports import Issued, Refused, RequestWindow, SendRequest
from otpgate.http.app import create_app
from otpgate.http.errors import HTTP_CODES
from otpgate.store.sqlite import SqliteStore
from otpgate.wiring import build_components
from tests.conftest import make_settings
from tests.fakes import CapturingSender

PHONE = "+12125550123"
COOLDOWN = 60
ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "t0k3n-" + "a" * 32
SERVICE_SID = "VA" + "2" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


class HeldSender(CapturingSender):
    """Takes the message, then holds the call until the test cuts the request off."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = asyncio.Event()
        self.hold = True

    async def send(self, phone: str, message: str) -> str:
        message_id = await super().send(phone, message)
        if self.hold:
            self.holding.set()
            await asyncio.Event().wait()  # until cancelled
        return message_id


class HeldStore(SqliteStore):
    """Holds the first store step of a send until the test cuts the request off."""

    holding: asyncio.Event | None = None

    async def issue(
        self, request: SendRequest, now: float, window: RequestWindow | None = None
    ) -> Issued | Refused:
        if self.holding is not None:
            self.holding.set()
            await asyncio.Event().wait()
        return await super().issue(request, now, window)


App = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    built: list[tuple[httpx.AsyncClient, Any]] = []

    async def factory(store: SqliteStore, sender: CapturingSender, clock: Clock) -> Any:
        settings = make_settings(
            tmp_path,
            otp_resend_cooldown_seconds=COOLDOWN,
            verify_v2_account_sid=ACCOUNT_SID,
            verify_v2_auth_token=AUTH_TOKEN,
            verify_v2_services=f"{SERVICE_SID}:Acme Shop",
        )
        components = build_components(settings, store=store, sender=sender, clock=clock)
        transport = httpx.ASGITransport(app=create_app(components))
        client = httpx.AsyncClient(transport=transport, base_url="http://otpgate.test")
        built.append((client, components))
        return client

    yield factory
    for client, components in built:
        await client.aclose()
        await components.close()


async def cut_off(
    held: asyncio.Event, call: Awaitable[httpx.Response], clock: Clock, after: float = 0
) -> httpx.Response:
    """``call``'s answer when its task is cancelled once ``held`` is set, ``after``
    seconds (by the service's clock) into the hold."""
    task = asyncio.ensure_future(call)
    await asyncio.wait_for(held.wait(), 5)
    clock.now += after
    task.cancel()
    return await asyncio.wait_for(task, 5)


def request_otp(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
    return client.post("/api/v1/request-otp", json={"phoneNumber": PHONE})


async def test_a_send_cut_off_at_the_provider_says_it_was_sent_and_when_to_ask_again(
    app: App, tmp_path: Path
) -> None:
    sender, clock = HeldSender(), Clock()
    client = await app(SqliteStore(tmp_path / "otpgate.sqlite3"), sender, clock)
    answer = await cut_off(sender.holding, request_otp(client), clock, after=20)
    assert answer.status_code == 503
    assert answer.json() == {
        "statusCode": 503,
        "error": "Service Unavailable",
        "message": SentBeforeShutdown.message,
        "code": "shutting_down",
    }
    assert answer.headers["retry-after"] == str(COOLDOWN - 20)
    # Asking again sooner is refused for the same time: the code did go out.
    sender.hold = False
    again = await request_otp(client)
    assert again.status_code == 429
    assert again.json()["code"] == "resend_cooldown"
    assert again.headers["retry-after"] == answer.headers["retry-after"]
    # And the code it was handed stays good.
    verified = await client.post(
        "/api/v1/verify-otp", json={"phoneNumber": PHONE, "otp": sender.last_code(PHONE)}
    )
    assert verified.status_code == 200, verified.text


async def test_a_send_cut_off_before_the_provider_is_the_plain_answer(
    app: App, tmp_path: Path
) -> None:
    store, sender, clock = HeldStore(tmp_path / "otpgate.sqlite3"), CapturingSender(), Clock()
    store.holding = asyncio.Event()
    client = await app(store, sender, clock)
    answer = await cut_off(store.holding, request_otp(client), clock)
    assert answer.status_code == 503
    assert answer.json() == {
        "statusCode": 503,
        "error": "Service Unavailable",
        "message": HTTP_CODES["shutting_down"][1],
        "code": "shutting_down",
    }
    assert answer.headers["retry-after"] == "1"
    assert sender.sent == []


async def test_a_verify_v2_send_cut_off_at_the_provider_says_so_too(
    app: App, tmp_path: Path
) -> None:
    sender, clock = HeldSender(), Clock()
    client = await app(SqliteStore(tmp_path / "otpgate.sqlite3"), sender, clock)
    credentials = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    call = client.post(
        f"/v2/Services/{SERVICE_SID}/Verifications",
        data={"To": PHONE, "Channel": "sms"},
        headers={"Authorization": f"Basic {credentials}"},
    )
    answer = await cut_off(sender.holding, call, clock, after=5)
    assert answer.status_code == 503
    assert answer.json()["message"] == SentBeforeShutdown.message
    assert answer.headers["retry-after"] == str(COOLDOWN - 5)
