"""Twilio Verify's TOTP (Entities, Factors, Challenges) on the v2 routes, driven by the
official `twilio` SDK against a running `otpgate serve`, with pyotp as the authenticator
app: on SQLite, and the same flow once on PostgreSQL."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest.verify.v2.service import ServiceContext

from otpgate.http.app import create_app
from otpgate.wiring import build_components
from tests.conftest import make_settings
from tests.fakes import CapturingSender
from tests.service_process import ServiceProcess, serving
from tests.test_twilio_verify import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OTHER_SERVICE_SID,
    SERVICE_SID,
    V2_ENV,
    twilio_client,
)

THRESHOLD = 3  # wrong codes before the identity is locked out


@contextlib.contextmanager
def _serving(tmp_path: Path, **env: str) -> Iterator[ServiceProcess]:
    with serving(
        tmp_path,
        never_logged=(AUTH_TOKEN,),
        RATE_LIMIT_MAX_REQUESTS="1000",
        PHONE_LOCKOUT_THRESHOLD=str(THRESHOLD),
        **V2_ENV,
        **env,
    ) as process:
        yield process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with _serving(tmp_path_factory.mktemp("v2-totp")) as process:
        yield process


@pytest.fixture
def verify(server: ServiceProcess) -> ServiceContext:
    return twilio_client(server.base).verify.v2.services(SERVICE_SID)


def _wrong(totp: pyotp.TOTP) -> str:
    """A code no step near now has."""
    near = {totp.at(time.time() + k * totp.interval) for k in range(-3, 4)}
    return next(c for c in ("000000", "111111", "222222") if c not in near)


def _enrol(verify: ServiceContext, identity: str) -> tuple[str, pyotp.TOTP]:
    factor = verify.entities(identity).new_factors.create(
        friendly_name="Work phone", factor_type="totp"
    )
    assert factor.sid.startswith("YF") and len(factor.sid) == 34
    assert (factor.status, factor.factor_type, factor.identity) == (
        "unverified",
        "totp",
        identity,
    )
    assert factor.config == {"alg": "sha1", "skew": 1, "code_length": 6, "time_step": 30}
    assert factor.binding is not None
    secret, uri = factor.binding["secret"], factor.binding["uri"]
    assert isinstance(uri, str) and uri.startswith("otpauth://totp/")
    assert "issuer=Acme%20Shop" in uri and "Work%20phone" in uri
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP) and totp.secret == secret
    return factor.sid, totp


def run_flow(base: str, identity: str) -> None:
    """Entity, factor, verification, challenges, reads without secrets, deletes."""
    verify = twilio_client(base).verify.v2.services(SERVICE_SID)
    entity = verify.entities.create(identity=identity)
    assert entity.sid.startswith("YE") and len(entity.sid) == 34
    assert (entity.identity, entity.service_sid, entity.account_sid) == (
        identity,
        SERVICE_SID,
        ACCOUNT_SID,
    )
    assert verify.entities(identity).fetch().sid == entity.sid

    factor_sid, totp = _enrol(verify, identity)
    factor = verify.entities(identity).factors(factor_sid)
    # A wrong code leaves it unverified (200, as Twilio answers); the right one verifies.
    assert factor.update(auth_payload=_wrong(totp)).status == "unverified"
    verified = factor.update(auth_payload=totp.now())
    assert (verified.sid, verified.status) == (factor_sid, "verified")

    challenges = verify.entities(identity).challenges
    code = totp.at(time.time() + totp.interval)  # the next step's
    approved = challenges.create(factor_sid=factor_sid, auth_payload=code)
    assert approved.sid.startswith("YC") and len(approved.sid) == 34
    assert (approved.status, approved.responded_reason, approved.factor_type) == (
        "approved",
        "none",
        "totp",
    )
    assert approved.date_responded is not None and approved.entity_sid == entity.sid
    replayed = challenges.create(factor_sid=factor_sid, auth_payload=code)
    assert (replayed.status, replayed.date_responded) == ("pending", None)
    wrong = challenges.create(factor_sid=factor_sid, auth_payload=_wrong(totp))
    assert wrong.status == "pending"

    assert challenges(approved.sid).fetch().status == "approved"
    listed = challenges.list()
    assert [c.sid for c in listed] == [approved.sid, replayed.sid, wrong.sid]
    assert [c.sid for c in challenges.list(status="approved")] == [approved.sid]
    assert [c.sid for c in challenges.list(order="desc", limit=1)] == [wrong.sid]

    # Reads never show the secret again.
    fetched = factor.fetch()
    assert fetched.status == "verified" and not hasattr(fetched, "binding")
    (only,) = verify.entities(identity).factors.list()
    assert only.sid == factor_sid and not hasattr(only, "binding")
    for path in (f"Factors/{factor_sid}", "Factors"):
        raw = httpx.get(
            f"{base}/v2/Services/{SERVICE_SID}/Entities/{identity}/{path}",
            auth=(ACCOUNT_SID, AUTH_TOKEN),
        )
        assert raw.status_code == 200
        assert "binding" not in raw.text and totp.secret not in raw.text

    assert factor.delete() is True
    with pytest.raises(TwilioRestException) as info:
        factor.fetch()
    assert (info.value.status, info.value.code) == (404, 20404)
    assert verify.entities(identity).delete() is True
    with pytest.raises(TwilioRestException) as info:
        verify.entities(identity).fetch()
    assert (info.value.status, info.value.code) == (404, 20404)


def test_the_totp_flow_through_the_sdk(server: ServiceProcess) -> None:
    run_flow(server.base, "user-flow-0001")


def test_a_challenge_answered_later_by_update(verify: ServiceContext) -> None:
    factor_sid, totp = _enrol(verify, "user-later-0001")
    factor = verify.entities("user-later-0001").factors(factor_sid)
    assert factor.update(auth_payload=totp.now()).status == "verified"
    challenges = verify.entities("user-later-0001").challenges
    opened = challenges.create(factor_sid=factor_sid)
    assert opened.status == "pending" and opened.expiration_date is not None
    approved = challenges(opened.sid).update(auth_payload=totp.at(time.time() + totp.interval))
    assert (approved.sid, approved.status) == (opened.sid, "approved")


def test_a_challenge_past_its_expiration_date_is_expired(verify: ServiceContext) -> None:
    identity = "user-expiry-0001"
    factor_sid, totp = _enrol(verify, identity)
    verify.entities(identity).factors(factor_sid).update(auth_payload=totp.now())
    challenges = verify.entities(identity).challenges
    soon = datetime.now(UTC) + timedelta(seconds=2)
    opened = challenges.create(factor_sid=factor_sid, expiration_date=soon)
    assert opened.status == "pending"
    time.sleep(max(0.0, soon.replace(microsecond=0).timestamp() - time.time()) + 0.1)
    assert challenges(opened.sid).fetch().status == "expired"
    code = totp.at(time.time() + totp.interval)
    assert challenges(opened.sid).update(auth_payload=code).status == "expired"
    assert [c.sid for c in challenges.list(status="expired")] == [opened.sid]
    for bad in (datetime.now(UTC) - timedelta(minutes=1), soon + timedelta(hours=2)):
        with pytest.raises(TwilioRestException) as info:
            challenges.create(factor_sid=factor_sid, expiration_date=bad)
        assert (info.value.status, info.value.code) == (400, 60200)


def test_unknown_factor_or_invalid_identity(verify: ServiceContext) -> None:
    _enrol(verify, "user-known-0001")
    with pytest.raises(TwilioRestException) as info:
        verify.entities("user-known-0001").challenges.create(
            factor_sid="YF" + "0" * 32, auth_payload="123456"
        )
    assert (info.value.status, info.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as info:
        verify.entities.create(identity="not valid!")
    assert (info.value.status, info.value.code) == (400, 60200)
    # A list's 404 reaches code as the SDK's page error, which carries the answer.
    with pytest.raises(TwilioException) as page_error:
        verify.entities("user-unknown-0001").challenges.list()
    assert '"code":20404' in str(page_error.value)


def test_wrong_codes_lock_the_entity_out(verify: ServiceContext) -> None:
    identity = "user-lock-0001"
    factor_sid, totp = _enrol(verify, identity)
    factor = verify.entities(identity).factors(factor_sid)
    for _ in range(THRESHOLD):
        assert factor.update(auth_payload=_wrong(totp)).status == "unverified"
    with pytest.raises(TwilioRestException) as info:
        factor.update(auth_payload=totp.now())  # even the right code waits
    assert (info.value.status, info.value.code) == (429, 60202)


def test_config_is_kept_and_checked(verify: ServiceContext) -> None:
    factor = verify.entities("user-config-0001").new_factors.create(
        friendly_name="Tablet",
        factor_type="totp",
        config_time_step=60,
        config_skew=0,
        config_code_length=8,
        config_alg="sha256",
    )
    assert factor.config == {"alg": "sha256", "skew": 0, "code_length": 8, "time_step": 60}
    totp = pyotp.parse_uri(factor.binding["uri"])
    assert (totp.digits, totp.interval) == (8, 60)
    for bad in (
        {"config_time_step": 10},
        {"config_skew": 3},
        {"config_code_length": 9},
        {"config_code_length": 4},  # Twilio's range, but otpgate makes 6 to 8 digits
        {"config_alg": "md5"},
    ):
        with pytest.raises(TwilioRestException) as info:
            verify.entities("user-config-0001").new_factors.create(
                friendly_name="Tablet", factor_type="totp", **bad
            )
        assert (info.value.status, info.value.code) == (400, 60200), bad
    with pytest.raises(TwilioRestException) as info:
        verify.entities("user-config-0001").new_factors.create(
            friendly_name="Phone", factor_type="push"
        )
    assert (info.value.status, info.value.code) == (400, 60200)


def test_entities_page_as_twilio_pages(server: ServiceProcess) -> None:
    other = twilio_client(server.base).verify.v2.services(OTHER_SERVICE_SID)
    names = [f"user-page-{n:04d}" for n in range(5)]
    for name in names:
        other.entities.create(identity=name)
    assert [e.identity for e in other.entities.list(page_size=2)] == names
    page = httpx.get(
        f"{server.base}/v2/Services/{OTHER_SERVICE_SID}/Entities",
        params={"PageSize": 2, "Page": 1},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
    ).json()
    assert [e["identity"] for e in page["entities"]] == names[2:4]
    meta = page["meta"]
    assert (meta["page"], meta["page_size"], meta["key"]) == (1, 2, "entities")
    assert meta["next_page_url"].endswith("PageSize=2&Page=2")
    assert meta["previous_page_url"].endswith("PageSize=2&Page=0")
    assert meta["first_page_url"].endswith("PageSize=2&Page=0")


def test_another_services_entity_is_not_found(server: ServiceProcess) -> None:
    shop = twilio_client(server.base).verify.v2.services(SERVICE_SID)
    bank = twilio_client(server.base).verify.v2.services(OTHER_SERVICE_SID)
    factor_sid, _ = _enrol(shop, "user-apart-0001")
    for call in (
        lambda: bank.entities("user-apart-0001").fetch(),
        lambda: bank.entities("user-apart-0001").factors(factor_sid).fetch(),
    ):
        with pytest.raises(TwilioRestException) as info:
            call()
        assert (info.value.status, info.value.code) == (404, 20404)
    # Its own entity of that name holds none of the other's factors.
    bank.entities.create(identity="user-apart-0001")
    assert bank.entities("user-apart-0001").factors.list() == []


def test_wrong_credentials_are_401_20003(server: ServiceProcess) -> None:
    answer = httpx.get(
        f"{server.base}/v2/Services/{SERVICE_SID}/Entities", auth=(ACCOUNT_SID, "x" * 40)
    )
    assert answer.status_code == 401
    assert answer.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }


def test_the_flow_on_postgresql(tmp_path: Path, postgres_database: str) -> None:
    with _serving(tmp_path, DATABASE_URL=postgres_database) as process:
        run_flow(process.base, "user-pg-0001")


# --- in-process: the per-IP window and the headers, on SQLite ------------------------------


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """This module's in-process tests take the SQLite credential database only."""
    return f"sqlite:///{tmp_path / 'credentials.sqlite3'}"


async def test_each_request_counts_once_and_no_answer_is_cached(
    migrated_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path,
        database_url=migrated_url,
        rate_limit_max_requests=5,
        verify_v2_account_sid=ACCOUNT_SID,
        verify_v2_auth_token=AUTH_TOKEN,
        verify_v2_services=f"{SERVICE_SID}:Acme Shop",
    )
    components = build_components(settings, sender=CapturingSender())
    transport = httpx.ASGITransport(app=create_app(components))
    base = f"/v2/Services/{SERVICE_SID}/Entities/user-inproc-0001/Factors"
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            created = await client.post(
                base, data={"FriendlyName": "Phone", "FactorType": "totp"}, auth=auth
            )
            assert created.status_code == 201, created.text
            assert created.headers["cache-control"] == "no-store"
            assert created.headers["x-ratelimit-remaining"] == "4"
            bad = await client.post(
                base,
                data={"FriendlyName": "Phone", "FactorType": "totp", "Config.Skew": "9"},
                auth=auth,
            )
            assert (bad.status_code, bad.json()["code"]) == (400, 60200)
            assert set(bad.json()) == {"code", "message", "more_info", "status"}
            assert bad.headers["x-ratelimit-remaining"] == "3"  # counted once
            listed = await client.get(base, auth=auth)
            # A read counts in its own window, the native factor list's.
            assert listed.headers["x-ratelimit-remaining"] == "4"
            assert created.json()["binding"]["secret"] not in listed.text
    finally:
        await components.close()
