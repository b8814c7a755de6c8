"""The API's core promises, on both stores: one code, one success, no leaks."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from typing import Any
from unittest.mock import ANY

import pytest
import redis

from otpgate.domain.errors import SmsFailed, SmsRejected, SmsUnavailable
from otpgate.domain.limits import Lockout
from otpgate.store.redis.slot import cluster_prefix, key_slot
from otpgate.store.redis.url import ClusterUrl, parse_redis_url
from tests.conftest import HASH_SECRET, STORES_AND_CLUSTER, ServiceFactory
from tests.fakes import CapturingSender, FailingSender

PHONE = "+12125550123"
OPEN = {"rate_limit_max_requests": 1000}
LOCK = Lockout()


@pytest.fixture(params=STORES_AND_CLUSTER)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every test here on SQLite, one Redis and a Redis Cluster."""
    return str(request.param)


async def test_request_then_verify_once(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender)
    r = await svc.request(PHONE)
    assert r.status_code == 200
    body = r.json()
    assert body["message"] == "OTP requested successfully. Check your phone."
    assert body["messageId"]
    assert body["expiresIn"] == 300
    opened = body["verificationId"]
    assert re.fullmatch(r"VE[0-9a-f]{32}", opened)
    code = sender.last_code(PHONE)
    assert len(code) == 6

    ok = await svc.verify(PHONE, code)
    assert ok.status_code == 200
    body = ok.json()
    assert body == {
        "success": True,
        "message": "OTP verified successfully.",
        "token": ANY,
        "verificationId": opened,
    }
    assert body["token"].count(".") == 2  # a JWS; tests/test_tokens.py checks it

    again = await svc.verify(PHONE, code)
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_code"


async def test_wrong_code_is_400_with_error_body(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender)
    await svc.request(PHONE)
    wrong = "000000" if sender.last_code(PHONE) != "000000" else "111111"
    r = await svc.verify(PHONE, wrong)
    assert r.status_code == 400
    assert r.json() == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": "Invalid or expired OTP.",
        "code": "invalid_code",
    }


async def test_max_attempts_kills_the_code(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, **OPEN)
    await svc.request(PHONE)
    code = sender.last_code(PHONE)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert (await svc.verify(PHONE, wrong)).status_code == 400
    refused = await svc.verify(PHONE, code)
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_attempts"


async def test_unknown_number_looks_like_wrong_code(make_service: ServiceFactory) -> None:
    """Enumeration: same status, body and attempt limit whether or not a code exists."""
    sender = CapturingSender()
    svc = await make_service(sender=sender, **OPEN)
    known, unknown = PHONE, "+12125550124"
    await svc.request(known)
    wrong = f"{(int(sender.last_code(known)) + 1) % 1_000_000:06d}"
    for _ in range(6):
        a = await svc.verify(known, wrong)
        b = await svc.verify(unknown, wrong)
        assert (a.status_code, a.json()) == (b.status_code, b.json())


async def test_fifty_concurrent_verifies_one_success(make_service: ServiceFactory) -> None:
    """Two app instances on one store, 50 verifies of the right code at once."""
    sender = CapturingSender()
    a = await make_service(sender=sender, **OPEN)
    b = await make_service(sender=sender, **OPEN)
    await a.request(PHONE)
    code = sender.last_code(PHONE)
    replies = await asyncio.gather(*(s.verify(PHONE, code) for s in [a, b] * 25))
    statuses = [r.status_code for r in replies]
    assert statuses.count(200) == 1, statuses
    assert all(s in (400, 429) for s in statuses if s != 200)


async def test_failed_send_leaves_nothing_and_charges_nothing(
    make_service: ServiceFactory,
) -> None:
    failing = FailingSender(SmsUnavailable())
    svc = await make_service(sender=failing)
    r = await svc.request(PHONE)
    assert r.status_code == 503
    assert r.json()["code"] == "sms_provider_unavailable"
    # No code dangles: even a guess at every code finds nothing to match.
    attempt = await svc.components.store.begin_verify(PHONE, 300, time.time(), LOCK)
    assert attempt.code_hash is None
    # The cooldown was not burnt: asking again at once reaches the provider again.
    r2 = await svc.request(PHONE)
    assert r2.status_code == 503
    assert failing.calls == 2


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (SmsRejected(), 400, "sms_number_rejected"),
        (SmsUnavailable(), 503, "sms_provider_unavailable"),
        (SmsFailed(), 502, "sms_provider_error"),
    ],
)
async def test_provider_errors_map_to_status(
    make_service: ServiceFactory, error: Exception, status: int, code: str
) -> None:
    svc = await make_service(sender=FailingSender(error))
    r = await svc.request(PHONE)
    assert r.status_code == status
    assert r.json()["code"] == code
    assert r.json()["statusCode"] == status


async def test_resend_cooldown_and_old_code_dies(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, otp_resend_cooldown_seconds=60, **OPEN)
    assert (await svc.request(PHONE)).status_code == 200
    refused = await svc.request(PHONE)
    assert refused.status_code == 429
    assert refused.json()["code"] == "resend_cooldown"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_per_ip_rate_limit_matches_node_headers(make_service: ServiceFactory) -> None:
    svc = await make_service(rate_limit_max_requests=3)
    replies = [await svc.verify(PHONE, "123456") for _ in range(4)]
    assert [r.status_code for r in replies] == [400, 400, 400, 429]
    assert replies[0].headers["x-ratelimit-limit"] == "3"
    assert replies[0].headers["x-ratelimit-remaining"] == "2"
    last = replies[-1]
    assert last.json()["code"] == "rate_limited"
    assert last.json()["message"].startswith("Rate limit exceeded, retry in ")
    assert 1 <= int(last.headers["retry-after"]) <= 60
    # Routes are limited separately.
    assert (await svc.request(PHONE)).status_code == 200


def _redis_holding(url: str, prefix: str) -> redis.Redis:
    """A client to the server that holds the keys: on Cluster, the prefix slot's master."""
    parsed = parse_redis_url(url)
    if not isinstance(parsed, ClusterUrl):
        return redis.Redis.from_url(url)
    seed = parsed.seeds[0]
    with redis.Redis(host=seed.host, port=seed.port) as any_node:
        slot = key_slot(cluster_prefix(prefix))
        for first, last, master, *_ in any_node.execute_command("CLUSTER SLOTS"):
            if int(first) <= slot <= int(last):
                return redis.Redis(host=master[0].decode(), port=int(master[1]))
    raise AssertionError(f"no node serves slot {slot}")


def _written(settings: Any) -> str:
    """The prefix the keys are written under (with a hash tag on Cluster)."""
    prefix: str = settings.redis_key_prefix
    url = parse_redis_url(settings.redis_url)
    return cluster_prefix(prefix) if isinstance(url, ClusterUrl) else prefix


def _store_dump(svc: Any) -> bytes:
    """Every byte the store holds, whichever backend it is."""
    settings = svc.settings
    if settings.redis_url:
        client = _redis_holding(settings.redis_url, settings.redis_key_prefix)
        try:
            out = b""
            for key in client.scan_iter(match=f"{_written(settings)}*"):
                out += key
                kind = client.type(key)
                if kind == b"hash":
                    for f, v in client.hgetall(key).items():
                        out += f + v
                elif kind == b"string":
                    out += client.get(key) or b""
            return out
        finally:
            client.close()
    conn = sqlite3.connect(settings.sqlite_path)
    try:
        rows = conn.execute("SELECT * FROM codes").fetchall()
        rows += conn.execute("SELECT * FROM counters").fetchall()
    finally:
        conn.close()
    return repr(rows).encode()


async def test_no_plaintext_code_in_store_or_logs(
    make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sender = CapturingSender()
    svc = await make_service(sender=sender, **OPEN)
    await svc.request(PHONE)
    code = sender.last_code(PHONE)
    dump = _store_dump(svc)
    assert dump, "the store should hold the pending code"
    assert not re.search(rb"(?<![0-9])" + code.encode() + rb"(?![0-9])", dump)
    assert PHONE.encode() in dump  # sanity: we really read the store
    await svc.verify(PHONE, "999999" if code != "999999" else "111111")
    await svc.verify(PHONE, code)
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert caplog.records, "expected some log lines"
    assert not re.search(rf"(?<![0-9]){code}(?![0-9])", text)
    assert HASH_SECRET not in text
    assert PHONE not in text  # logged masked only


async def test_malformed_requests_count_against_the_ip_limit(
    make_service: ServiceFactory,
) -> None:
    svc = await make_service(rate_limit_max_requests=2)
    for _ in range(2):
        bad = await svc.client.post(
            "/api/v1/verify-otp", content=b"{", headers={"content-type": "application/json"}
        )
        assert bad.status_code == 400
        assert "x-ratelimit-remaining" in bad.headers
    limited = await svc.verify(PHONE, "123456")
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    invalid_phone = await svc.verify("+15551234567", "123456")
    assert invalid_phone.json()["code"] == "rate_limited"


async def test_the_last_allowed_attempt_can_still_be_the_right_code(
    make_service: ServiceFactory,
) -> None:
    """OTP_MAX_ATTEMPTS=5: four wrong codes, then the right one on the fifth attempt."""
    sender = CapturingSender()
    svc = await make_service(sender=sender, rate_limit_max_requests=100)
    phone = "+12125550161"
    assert (await svc.request(phone)).status_code == 200
    code = sender.last_code(phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(4):
        assert (await svc.verify(phone, wrong)).json()["code"] == "invalid_code"
    fifth = await svc.verify(phone, code)
    assert fifth.status_code == 200, fifth.text
