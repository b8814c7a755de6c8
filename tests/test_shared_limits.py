"""Limits hold across processes that share a store, not per process."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service_process import ServiceProcess

pytestmark = pytest.mark.integration  # every test here starts `otpgate serve`

PHONE = "+12125550190"
REQUEST, VERIFY = "/api/v1/request-otp", "/api/v1/verify-otp"
OPEN = {"RATE_LIMIT_MAX_REQUESTS": "1000", "OTP_RESEND_COOLDOWN_SECONDS": "0"}


@pytest.fixture(params=["redis", "sqlite"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    """Two service processes sharing one store: a Redis prefix, or one SQLite file."""
    if request.param == "redis":
        shared = {
            "REDIS_URL": request.getfixturevalue("redis_url"),
            "REDIS_KEY_PREFIX": request.getfixturevalue("redis_prefix"),
        }
    else:
        shared = {"SQLITE_PATH": str(tmp_path / "shared.sqlite3")}
    procs = [ServiceProcess(tmp_path, **OPEN, **shared) for _ in range(2)]
    try:
        for p in procs:
            p.wait_ready()
        yield procs
    finally:
        for p in procs:
            p.stop()


def test_send_window_is_shared(pair: list[ServiceProcess]) -> None:
    turns = itertools.cycle(pair)
    codes = [next(turns).post(REQUEST, {"phoneNumber": PHONE}).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]


def test_guess_limit_is_shared(pair: list[ServiceProcess]) -> None:
    turns = itertools.cycle(pair)
    body = {"phoneNumber": PHONE, "otp": "000000"}
    answers = [next(turns).post(VERIFY, body).json()["code"] for _ in range(6)]
    assert answers == ["invalid_code"] * 5 + ["too_many_attempts"]


def test_two_workers_share_one_sqlite_file(tmp_path: Path) -> None:
    server = ServiceProcess(tmp_path, workers=2, **OPEN)
    try:
        server.wait_ready()
        codes = [server.post(REQUEST, {"phoneNumber": PHONE}).status_code for _ in range(8)]
    finally:
        out = server.stop()
    assert codes == [200] * 5 + [429] * 3, out


def test_forged_forwarded_for_does_not_reset_the_limit_of_a_real_server(tmp_path: Path) -> None:
    """The HTTP server must not believe X-Forwarded-For on its own (even from 127.0.0.1)."""
    server = ServiceProcess(tmp_path, RATE_LIMIT_MAX_REQUESTS="3")
    try:
        server.wait_ready()
        codes = [
            httpx.post(
                f"{server.base}{VERIFY}",
                json={"phoneNumber": f"+1212555019{i}", "otp": "000000"},
                headers={"x-forwarded-for": f"203.0.113.{i}"},
                timeout=10,
            ).json()["code"]
            for i in range(4)
        ]
    finally:
        server.stop()
    assert codes == ["invalid_code"] * 3 + ["rate_limited"]


def test_ipv6_clients_behind_a_proxy_count_by_their_64(tmp_path: Path) -> None:
    """Through a trusted proxy, addresses of one /64 share the per-IP limits of a real server."""
    server = ServiceProcess(
        tmp_path,
        TRUSTED_PROXIES="127.0.0.1/32",
        RATE_LIMIT_MAX_REQUESTS="2",
        IP_MAX_PHONES="1",
        OTP_RESEND_COOLDOWN_SECONDS="0",
    )

    def verify(client: str) -> str:
        return str(
            httpx.post(
                f"{server.base}{VERIFY}",
                json={"phoneNumber": PHONE, "otp": "000000"},
                headers={"x-forwarded-for": client},
                timeout=10,
            ).json()["code"]
        )

    def request(client: str, phone: str) -> str:
        reply = httpx.post(
            f"{server.base}{REQUEST}",
            json={"phoneNumber": phone},
            headers={"x-forwarded-for": client},
            timeout=10,
        )
        return "sent" if reply.status_code == 200 else str(reply.json()["code"])

    try:
        server.wait_ready()
        verifies = [verify(f"2001:db8:cc:1::{i}") for i in range(1, 7)]
        other_net = verify("2001:db8:cc:2::1")
        sends = [request(f"2001:db8:dd:1::{i}", f"+1212555017{i}") for i in range(1, 3)]
        other_send = request("2001:db8:dd:2::1", "+12125550172")
    finally:
        out = server.stop()
    assert verifies == ["invalid_code"] * 2 + ["rate_limited"] * 4, out
    assert other_net == "invalid_code"
    # One phone per client: the second address of the /64 is the same client.
    assert sends == ["sent", "ip_phone_limit"], out
    assert other_send == "sent"
