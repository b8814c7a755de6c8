"""Liveness touches nothing; readiness follows the store and the SMS provider."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from otpgate.domain.errors import StoreUnavailable
from otpgate.http.app import create_app
from otpgate.wiring import build_components
from tests.conftest import make_settings
from tests.fakes import CapturingSender
from tests.redis_server import PrivateRedis


class DeadStore:
    """Every operation fails, and counts that it was called."""

    calls = 0

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            type(self).calls += 1
            if name == "close":
                return None
            raise StoreUnavailable()

        return fail


@asynccontextmanager
async def app_client(settings: Any, **components: Any) -> AsyncIterator[httpx.AsyncClient]:
    built = build_components(settings, **components)
    transport = httpx.ASGITransport(app=create_app(built))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://otpgate.test") as c:
            yield c
    finally:
        await built.close()


async def test_health_does_no_io(tmp_path: Path) -> None:
    DeadStore.calls = 0
    settings = make_settings(tmp_path)
    async with app_client(settings, store=DeadStore(), sender=CapturingSender()) as client:
        response = await client.get("/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert DeadStore.calls == 0
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert DeadStore.calls == 1


async def test_ready_when_store_answers(make_service: Any) -> None:
    svc = await make_service()
    response = await svc.client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}
    assert response.headers["cache-control"] == "no-store"


async def test_ready_turns_503_while_redis_is_down(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, redis_url=private_redis.url, redis_key_prefix="otpgate-ready-test:"
    )
    async with app_client(settings, sender=CapturingSender()) as client:
        assert (await client.get("/ready")).status_code == 200

        private_redis.stop()
        started = time.monotonic()
        down = await client.get("/ready")
        assert time.monotonic() - started < 3.0, "readiness must answer in bounded time"
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "not ready"
        assert body["reasons"] == ["store (redis) is not answering"]
        assert str(private_redis.port) not in down.text  # no address, no URL, no secret
        # Liveness does not follow the store: the process is fine, only not ready.
        assert (await client.get("/health")).status_code == 200

        private_redis.start()
        up = await client.get("/ready")
        assert up.status_code == 200
        assert up.json() == {"status": "ready"}


async def test_ready_reports_a_known_broken_provider(make_service: Any) -> None:
    svc = await make_service(sender=CapturingSender(problem="credentials were rejected"))
    response = await svc.client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {
        "status": "not ready",
        "reasons": ["sms provider (capture): credentials were rejected"],
    }


async def test_ready_lists_every_reason(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    sender = CapturingSender(problem="AWS region is not set")
    async with app_client(settings, store=DeadStore(), sender=sender) as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["reasons"] == [
        "store (sqlite) is not answering",
        "sms provider (capture): AWS region is not set",
    ]
