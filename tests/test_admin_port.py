"""ADMIN_PORT with a real ``otpgate serve``: each worker listens on both ports, and each
port serves its own routes only; an override set through one worker is read through
every other (they share the SQLite store). tests/test_admin_api.py has the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service_process import ServiceProcess, free_port

pytestmark = pytest.mark.integration

ADMIN_KEY = "admin-key-" + "a" * 32
BEARER = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ServiceProcess, str]]:
    """The service, and the base URL of its admin port."""
    admin_port = free_port()
    service = ServiceProcess(
        tmp_path,
        workers=request.param,
        ADMIN_API_KEYS=f"ops:{ADMIN_KEY}",
        ADMIN_PORT=str(admin_port),
    )
    try:
        service.wait_ready()
        yield service, f"http://127.0.0.1:{admin_port}"
    finally:
        out = service.stop()
        assert "Traceback" not in out, out
        assert ADMIN_KEY not in out


def test_each_port_serves_its_own_routes(server: tuple[ServiceProcess, str]) -> None:
    service, admin = server
    service.wait_for_line(lambda line: f"admin dashboard at {admin}/admin" in line)
    # Several connections each way: with two workers, the kernel spreads them over both.
    for _ in range(6):
        with httpx.Client(timeout=5) as fresh:
            page = fresh.get(f"{admin}/admin")
            assert page.status_code == 200
            assert "default-src 'none'" in page.headers["content-security-policy"]
            refused = fresh.get(f"{admin}/admin/v1/blocks")
            assert refused.status_code == 401
            blocks = fresh.get(f"{admin}/admin/v1/blocks", headers=BEARER)
            assert blocks.status_code == 200, blocks.text
            assert refused.headers["www-authenticate"] == "Bearer"
            assert fresh.get(f"{admin}/health").status_code == 200  # a load balancer's check
            assert fresh.post(f"{admin}/api/v1/request-otp", json={}).status_code == 404

            assert fresh.get(f"{service.base}/health").status_code == 200
            for path in ("/admin", "/admin/v1/blocks"):
                missing = fresh.get(f"{service.base}{path}", headers={"authorization": "x"})
                assert missing.status_code == 404
                assert missing.json()["code"] == "not_found"


def test_an_override_set_through_one_worker_is_seen_by_all(
    server: tuple[ServiceProcess, str],
) -> None:
    _, admin = server
    with httpx.Client(timeout=5) as client:
        put = client.put(f"{admin}/admin/v1/overrides/deny/prefix:4479112", headers=BEARER)
        assert put.status_code in (200, 201, 204), put.text
    for _ in range(6):
        with httpx.Client(timeout=5) as fresh:
            listed = fresh.get(f"{admin}/admin/v1/overrides", headers=BEARER)
            assert "prefix:4479112" in listed.text
