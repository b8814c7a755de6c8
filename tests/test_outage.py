"""An outage writes one error when it starts and one line with a count when it ends."""

from __future__ import annotations

import logging

import pytest

from otpgate.observability.outage import OutageLog
from tests.conftest import ServiceFactory
from tests.http_stub import Reply, StubServer
from tests.redis_server import PrivateRedis
from tests.test_webhook import accepted, receiver, webhook_at


def store_outage(now: list[float]) -> OutageLog:
    """The store's outage log, on a clock the test moves (``now[0]``)."""
    return OutageLog(logging.getLogger("test.outage"), "the store", clock=lambda: now[0])


def test_one_error_per_outage_and_one_line_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = store_outage(now)
    with caplog.at_level(logging.DEBUG, logger="test.outage"):
        outage.ok()  # nothing was down: nothing to say
        for _ in range(50):
            outage.failed("connection refused")
        now[0] += 7.5
        outage.ok()
        outage.ok()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.getMessage()) for r in loud] == [
        (
            "ERROR",
            "the store unavailable: connection refused; requests that need it are refused "
            "until it answers",
        ),
        ("WARNING", "the store available again after 7.5s; 50 operation(s) failed meanwhile"),
    ]
    assert loud[1].failed_operations == 50  # type: ignore[attr-defined]
    assert not outage.down


def test_a_configuration_the_dependency_refuses_is_said_once_even_mid_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = store_outage(now)
    with caplog.at_level(logging.DEBUG, logger="test.outage"):
        outage.failed("connection lost")  # the server went away...
        for _ in range(5):  # ...and came back wanting a client certificate
            outage.refused("set REDIS_TLS_CERT_FILE")
        now[0] += 2
        outage.ok()
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [
        "the store unavailable: connection lost; requests that need it are refused until it"
        " answers",
        "the store cannot be used as configured: set REDIS_TLS_CERT_FILE; requests that need"
        " it are refused until the configuration is fixed",
        "the store available again after 2.0s; 6 operation(s) failed meanwhile",
    ]


async def test_an_sms_outage_writes_two_lines_whatever_the_traffic(
    make_service: ServiceFactory, stub_server: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    receiver(stub_server, lambda _: Reply(503))
    service = await make_service(
        real_sender=True,
        **webhook_at(stub_server.url, otp_resend_cooldown_seconds=0, sms_retry_max_attempts=1),
    )
    with caplog.at_level(logging.INFO):
        for i in range(6):
            response = await service.request(f"+1212555012{i}")
            assert response.json()["code"] == "sms_provider_unavailable"
        receiver(stub_server, lambda _: accepted())
        assert (await service.request("+12125550129")).status_code == 200
    outage_lines = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and r.name.startswith("otpgate")
        and r.name != "otpgate.access"  # 5xx access lines are warnings themselves
    ]
    assert [r.levelname for r in outage_lines] == ["ERROR", "WARNING"], [
        r.getMessage() for r in outage_lines
    ]
    assert outage_lines[1].failed_operations == 6  # type: ignore[attr-defined]
    # ...while every refused request still has its own access line, with its code.
    refused = [r for r in caplog.records if getattr(r, "code", None) == "sms_provider_unavailable"]
    assert len(refused) == 6


async def test_a_redis_outage_writes_two_lines_whatever_the_traffic(
    make_service: ServiceFactory, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    svc = await make_service(
        redis_url=private_redis.url, redis_timeout_seconds=0.3, rate_limit_max_requests=100
    )
    assert (await svc.request("+12125550131")).status_code == 200
    private_redis.stop()
    with caplog.at_level(logging.INFO):
        for i in range(8):
            refused = await svc.verify(f"+1212555013{i}", "123456")
            assert refused.json()["code"] == "store_unavailable"
        private_redis.start()
        assert (await svc.verify("+12125550131", "123456")).json()["code"] == "invalid_code"
    store_lines = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "otpgate.store.redis" and r.levelno >= logging.WARNING
    ]
    assert [level for level, _ in store_lines] == ["ERROR", "WARNING"], store_lines
    assert store_lines[0][1].startswith("redis store unavailable: ")
    assert "8 operation(s) failed meanwhile" in store_lines[1][1]
    assert not [
        r for r in caplog.records if r.name == "otpgate.http" and r.levelno >= logging.ERROR
    ]
