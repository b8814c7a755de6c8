"""The embedded store is a file: a pending code survives a restart."""

from __future__ import annotations

from pathlib import Path

import httpx

from otpgate.http.app import create_app
from otpgate.wiring import build_components
from tests.conftest import make_settings
from tests.fakes import CapturingSender

PHONE = "+12125550177"


async def _post(app_components, path: str, body: dict[str, str]) -> httpx.Response:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=create_app(app_components))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post(path, json=body)


async def test_pending_code_verifies_after_restart(tmp_path: Path) -> None:
    # No OTP_HASH_SECRET: the development key is generated on disk and reused.
    settings = make_settings(
        tmp_path, otp_hash_secret=None, otp_hash_secret_file=tmp_path / "hash-secret"
    )
    sender = CapturingSender()
    first = build_components(settings, sender=sender)
    r = await _post(first, "/api/v1/request-otp", {"phoneNumber": PHONE})
    assert r.status_code == 200
    await first.close()  # the "process" stops

    second = build_components(settings, sender=CapturingSender())
    try:
        ok = await _post(
            second, "/api/v1/verify-otp", {"phoneNumber": PHONE, "otp": sender.last_code(PHONE)}
        )
        assert ok.status_code == 200, ok.text
    finally:
        await second.close()
    assert (tmp_path / "hash-secret").stat().st_mode & 0o077 == 0
