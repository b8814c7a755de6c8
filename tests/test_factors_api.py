"""Authenticator apps and recovery codes through the native HTTP API, on SQLite and on
PostgreSQL, with pyotp as the authenticator app and PyJWT checking the tokens."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from sqlalchemy import select

from otpgate.credentials.engine import create_engine
from otpgate.credentials.tables import recovery_codes
from otpgate.http.app import create_app
from otpgate.wiring import Components, build_components
from tests.conftest import make_settings
from tests.fakes import CapturingSender

KEY = "app-key-" + "k" * 32
ADMIN_KEY = "admin-key-" + "a" * 32
AUTH = {"authorization": f"Bearer {KEY}"}
BASE = "/api/v1/identities/user-42"


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()) // 30 * 30)  # a step's start: tokens are fresh

    def __call__(self) -> float:
        return self.now


@dataclass
class App:
    client: httpx.AsyncClient
    components: Components
    clock: Clock

    async def events(self) -> list[tuple[str, dict[str, Any]]]:
        found = await self.components.store.next_events("t", self.clock.now, 30, 1000)
        return [(e.type, e.data) for e in found or []]


@pytest.fixture
async def app(migrated_url: str, tmp_path: Path) -> AsyncIterator[App]:
    clock = Clock()
    settings = make_settings(
        tmp_path,
        database_url=migrated_url,
        api_keys=f"backend:{KEY}",
        admin_api_keys=f"ops:{ADMIN_KEY}",
        phone_lockout_threshold=3,
        rate_limit_max_requests=1000,
        phone_lockout_base_seconds=60,
        event_webhook_url="http://127.0.0.1:9/events",
        event_webhook_secret="s" * 32,
    )
    components = build_components(settings, sender=CapturingSender(), clock=clock)
    transport = httpx.ASGITransport(app=create_app(components))
    client = httpx.AsyncClient(transport=transport, base_url="http://otpgate.test")
    yield App(client, components, clock)
    await client.aclose()
    await components.close()


async def _enrol(app: App) -> tuple[str, pyotp.TOTP]:
    answer = await app.client.post(f"{BASE}/factors", json={"name": "Phone"}, headers=AUTH)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["status"] == "unverified"
    assert body["uri"].startswith("otpauth://totp/") and "issuer=otpgate" in body["uri"]
    assert body["qrSvg"].startswith("<svg")
    totp = pyotp.parse_uri(body["uri"])
    assert isinstance(totp, pyotp.TOTP) and totp.secret == body["secret"]
    return body["id"], totp


async def _claims(app: App, token: str) -> dict[str, Any]:
    jwks = (await app.client.get("/.well-known/jwks.json")).json()
    key = jwt.PyJWKSet.from_dict(jwks).keys[0]
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["ES256"], audience="otpgate", leeway=300
    )
    return claims


async def test_an_authenticator_app_enrols_activates_and_proves_the_identity(app: App) -> None:
    factor_id, totp = await _enrol(app)
    listed = (await app.client.get(f"{BASE}/factors", headers=AUTH)).json()["factors"]
    assert [f["id"] for f in listed] == [factor_id]
    assert "secret" not in listed[0] and "uri" not in listed[0]
    # Not verified yet: a challenge is refused even with the right code.
    code = totp.at(app.clock.now)
    challenge = {"factorId": factor_id, "code": code}
    refused = await app.client.post(f"{BASE}/challenges", json=challenge, headers=AUTH)
    assert refused.json()["code"] == "invalid_code"
    activated = await app.client.post(
        f"{BASE}/factors/{factor_id}/verify", json={"code": code}, headers=AUTH
    )
    assert activated.status_code == 200 and activated.json()["status"] == "verified"
    # The same step's code again: a replay, answered as a wrong code.
    replay = await app.client.post(f"{BASE}/challenges", json=challenge, headers=AUTH)
    assert (replay.status_code, replay.json()["code"]) == (400, "invalid_code")
    app.clock.now += 30
    challenge["code"] = totp.at(app.clock.now)
    approved = await app.client.post(f"{BASE}/challenges", json=challenge, headers=AUTH)
    assert approved.status_code == 200, approved.text
    claims = await _claims(app, approved.json()["token"])
    assert (claims["sub"], claims["amr"]) == ("user-42", ["otp"])
    again = await app.client.post(f"{BASE}/challenges", json=challenge, headers=AUTH)
    assert again.json()["code"] == "invalid_code"
    wrong = {"factorId": factor_id, "code": "000000" if challenge["code"] != "000000" else "1" * 6}
    assert (
        await app.client.post(f"{BASE}/challenges", json=wrong, headers=AUTH)
    ).status_code == 400
    types = [t for t, _ in await app.events()]
    assert types == [
        "factor.created",
        "challenge.failed",
        "factor.verified",
        "challenge.failed",
        "challenge.approved",
        "challenge.failed",
        "challenge.failed",
    ]
    deleted = await app.client.delete(f"{BASE}/factors/{factor_id}", headers=AUTH)
    assert deleted.status_code == 204
    app.clock.now += 30
    challenge["code"] = totp.at(app.clock.now)
    gone = await app.client.post(f"{BASE}/challenges", json=challenge, headers=AUTH)
    assert (gone.status_code, gone.json()["code"]) == (404, "factor_not_found")


async def test_wrong_codes_lock_the_identity_out(app: App) -> None:
    factor_id, totp = await _enrol(app)
    code = totp.at(app.clock.now)
    await app.client.post(f"{BASE}/factors/{factor_id}/verify", json={"code": code}, headers=AUTH)
    app.clock.now += 30
    wrong = {"factorId": factor_id, "code": "999999" if totp.now() != "999999" else "999998"}
    for _ in range(3):
        answer = await app.client.post(f"{BASE}/challenges", json=wrong, headers=AUTH)
        assert answer.json()["code"] == "invalid_code"
    right = {"factorId": factor_id, "code": totp.at(app.clock.now)}
    locked = await app.client.post(f"{BASE}/challenges", json=right, headers=AUTH)
    assert (locked.status_code, locked.json()["code"]) == (429, "too_many_attempts")
    assert locked.headers["retry-after"] == "60"
    app.clock.now += 60
    right["code"] = totp.at(app.clock.now)
    assert (
        await app.client.post(f"{BASE}/challenges", json=right, headers=AUTH)
    ).status_code == 200


async def test_recovery_codes_work_once_each_and_a_new_set_voids_the_old(
    app: App, migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    made = await app.client.post(f"{BASE}/recovery-codes", headers=AUTH)
    assert made.status_code == 201
    codes = made.json()["codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    for index, code in enumerate(codes):
        typed = code.upper().replace("-", " ") if index % 2 else code
        answer = await app.client.post(
            f"{BASE}/challenges", json={"recoveryCode": typed}, headers=AUTH
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["recoveryCodesLeft"] == 9 - index
        claims = await _claims(app, answer.json()["token"])
        assert (claims["sub"], claims["amr"]) == ("user-42", ["rec"])
    used = await app.client.post(
        f"{BASE}/challenges", json={"recoveryCode": codes[0]}, headers=AUTH
    )
    assert used.json()["code"] == "invalid_code"
    assert (await app.client.get(f"{BASE}/recovery-codes", headers=AUTH)).json() == {"remaining": 0}
    old = (await app.client.post(f"{BASE}/recovery-codes", headers=AUTH)).json()["codes"]
    new = (await app.client.post(f"{BASE}/recovery-codes", headers=AUTH)).json()["codes"]
    voided = await app.client.post(
        f"{BASE}/challenges", json={"recoveryCode": old[0]}, headers=AUTH
    )
    assert voided.json()["code"] == "invalid_code"
    assert (await app.client.get(f"{BASE}/recovery-codes", headers=AUTH)).json() == {
        "remaining": 10
    }
    assert ("recovery_code.used", {"identity": "user-42", "left": 9}) in await app.events()
    # Never in clear: not in a log line, not in the database.
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    engine = create_engine(migrated_url)
    async with engine.connect() as db:
        stored = str((await db.execute(select(recovery_codes))).all())
    await engine.dispose()
    raw = b""
    if migrated_url.startswith("sqlite"):
        path = Path(migrated_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    for code in codes + old + new:
        bare = code.replace("-", "")
        for form in (code, bare):
            assert form not in logged and form not in stored
            assert form.encode() not in raw


async def test_every_factor_route_needs_an_api_key(app: App) -> None:
    for method, path in [
        ("POST", f"{BASE}/factors"),
        ("GET", f"{BASE}/factors"),
        ("POST", f"{BASE}/challenges"),
        ("POST", f"{BASE}/recovery-codes"),
        ("GET", f"{BASE}/recovery-codes"),
    ]:
        answer = await app.client.request(method, path)
        assert (answer.status_code, answer.json()["code"]) == (401, "invalid_api_key")
    bad = await app.client.get("/api/v1/identities/a%20b/factors", headers=AUTH)
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_identity")


async def test_operators_list_and_delete_factors_with_an_audit_line(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    factor_id, _ = await _enrol(app)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    listed = await app.client.get("/admin/v1/identities/user-42/factors", headers=admin)
    assert [f["id"] for f in listed.json()["factors"]] == [factor_id]
    assert "secret" not in listed.text
    assert (
        await app.client.get("/admin/v1/identities/user-42/factors", headers=AUTH)
    ).status_code == 401
    with caplog.at_level(logging.INFO, logger="otpgate.audit"):
        gone = await app.client.delete(
            f"/admin/v1/identities/user-42/factors/{factor_id}", headers=admin
        )
    assert gone.status_code == 200
    line = next(r for r in caplog.records if r.name == "otpgate.audit")
    assert (line.action, line.admin_key_name, line.factor_id) == (  # type: ignore[attr-defined]
        "delete_factor",
        "ops",
        factor_id,
    )
    again = await app.client.delete(
        f"/admin/v1/identities/user-42/factors/{factor_id}", headers=admin
    )
    assert again.json()["code"] == "factor_not_found"
    assert ("factor.deleted", {"identity": "user-42", "factorId": factor_id, "by": "ops"}) in (
        await app.events()
    )


async def test_a_credential_database_that_is_down_answers_503(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, database_url="postgresql://postgres@127.0.0.1:1/none", api_keys=f"b:{KEY}"
    )
    components = build_components(settings, sender=CapturingSender())
    transport = httpx.ASGITransport(app=create_app(components))
    async with httpx.AsyncClient(transport=transport, base_url="http://otpgate.test") as client:
        answer = await client.post(f"{BASE}/factors", json={}, headers=AUTH)
    await components.close()
    assert (answer.status_code, answer.json()["code"]) == (503, "credentials_unavailable")
