"""Redis down: a quick 503, never a 500 or a hang; Redis back: service recovers."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ServiceFactory
from tests.redis_server import PrivateRedis

PHONE = "+12125550188"


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "stock"])
async def test_redis_stopped_gives_503_then_recovers(
    make_service: ServiceFactory, private_redis: PrivateRedis, fast_path: bool
) -> None:
    svc = await make_service(
        redis_url=private_redis.url,
        redis_timeout_seconds=0.3,
        rate_limit_max_requests=100,
        fast_path=fast_path,
    )
    assert (await svc.request(PHONE)).status_code == 200

    private_redis.stop()
    for call in (svc.request(PHONE), svc.verify(PHONE, "123456")):
        started = time.monotonic()
        r = await call
        elapsed = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "store_unavailable"
        assert "Traceback" not in r.text
        assert elapsed < 5, f"503 took {elapsed:.1f}s; timeouts must bound it"

    private_redis.start()  # same port, empty data
    assert (await svc.request(PHONE)).status_code == 200


async def test_malformed_request_with_redis_down_is_still_a_400(
    make_service: ServiceFactory, private_redis: PrivateRedis
) -> None:
    svc = await make_service(redis_url=private_redis.url, redis_timeout_seconds=0.3)
    private_redis.stop()
    r = await svc.client.post(
        "/api/v1/verify-otp", content=b"{", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_json"
