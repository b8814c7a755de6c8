"""The embedded store is a file: a pending code survives a restart, and an upgrade."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import httpx

from otpgate.domain.limits import Lockout, Quota
from otpgate.domain.ports import Issued, Refused, SendRequest
from otpgate.http.app import create_app
from otpgate.store.sqlite import SqliteStore
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


# The schema before the sliding logs: a file written by that version must open as is.
_SCHEMA_BEFORE_SEND_LOG = """
CREATE TABLE codes (
    phone TEXT PRIMARY KEY, code_hash BLOB, attempts INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE counters (
    key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires_at REAL NOT NULL,
    updated_at REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE members (
    key TEXT NOT NULL, member TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (key, member)
) WITHOUT ROWID;
"""


async def test_a_database_from_an_older_release_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "otpgate.sqlite3"
    now = time.time()
    old = sqlite3.connect(path)
    old.executescript(_SCHEMA_BEFORE_SEND_LOG)
    old.execute("INSERT INTO codes VALUES (?, ?, 0, ?)", (PHONE, b"\x01" * 32, now + 300))
    old.commit()
    old.close()

    store = SqliteStore(path)
    quota = Quota("phone_send_limit", "+12125550178", limit=1, window_seconds=600)
    request = SendRequest("+12125550178", b"\x02" * 32, 300, 0, (quota,), send_id="s1")
    try:
        # The code written before the upgrade is still there...
        assert (await store.begin_verify(PHONE, 300, now, Lockout())).code_hash == b"\x01" * 32
        # ...and the new table was added beside it.
        assert isinstance(await store.issue(request, now), Issued)
        refused = await store.issue(replace(request, send_id="s2"), now + 1)
        assert isinstance(refused, Refused)
        assert refused.retry_after == 599
        # ...and the columns added to codes: a send there can be voided by its id.
        await store.void_issue(request, now)
        assert isinstance(await store.issue(replace(request, send_id="s3"), now + 1), Issued)
    finally:
        await store.close()
