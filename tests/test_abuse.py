"""Attack tests: each one fails against a service without the defence it names."""

from __future__ import annotations

import pytest

from tests.conftest import STORES_AND_CLUSTER, ServiceFactory
from tests.fakes import CapturingSender

PHONE = "+12125550150"
UK = "+447400183750"
OPEN = {"rate_limit_max_requests": 1000, "otp_resend_cooldown_seconds": 0}


@pytest.fixture(params=STORES_AND_CLUSTER)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every test here on SQLite, one Redis and a Redis Cluster."""
    return str(request.param)


def other(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_sixth_guess_from_a_new_ip_is_refused(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, **OPEN)
    await svc.request(PHONE)
    code = sender.last_code(PHONE)
    for i in range(5):
        r = await svc.from_ip(f"198.51.100.{i + 1}").verify(PHONE, other(code))
        assert r.status_code == 400
    sixth = await svc.from_ip("198.51.100.99").verify(PHONE, code)
    assert sixth.status_code == 429
    assert sixth.json()["code"] == "too_many_attempts"


async def test_second_code_inside_cooldown_is_refused(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, rate_limit_max_requests=100)
    assert (await svc.request(PHONE)).status_code == 200
    r = await svc.request(PHONE)
    assert r.status_code == 429
    assert r.json()["code"] == "resend_cooldown"
    assert 55 <= int(r.headers["retry-after"]) <= 60
    assert len(sender.sent) == 1


async def test_new_code_kills_the_old_one(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, **OPEN)
    await svc.request(PHONE)
    old = sender.last_code(PHONE)
    await svc.request(PHONE)
    new = sender.last_code(PHONE)
    if old != new:
        assert (await svc.verify(PHONE, old)).status_code == 400
    assert (await svc.verify(PHONE, new)).status_code == 200


async def test_sixth_send_inside_the_window_is_refused(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, **OPEN)
    for _ in range(5):
        assert (await svc.request(PHONE)).status_code == 200
    sixth = await svc.from_ip("198.51.100.7").request(PHONE)
    assert sixth.status_code == 429
    assert sixth.json()["code"] == "phone_send_limit"
    assert int(sixth.headers["retry-after"]) >= 1
    assert len(sender.sent) == 5


async def test_disallowed_country_is_refused_without_sms(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, allowed_countries="US,CA", **OPEN)
    r = await svc.request(UK)
    assert r.status_code == 403
    assert r.json()["code"] == "country_not_allowed"
    assert sender.sent == []
    assert (await svc.request(PHONE)).status_code == 200


async def test_forged_forwarded_for_does_not_reset_the_ip_limit(
    make_service: ServiceFactory,
) -> None:
    svc = await make_service(rate_limit_max_requests=3)
    codes = []
    for i in range(4):
        r = await svc.verify(PHONE, "123456", headers={"x-forwarded-for": f"203.0.113.{i}"})
        codes.append(r.json()["code"])
    assert codes == ["invalid_code"] * 3 + ["rate_limited"]


async def test_forwarded_for_is_believed_from_a_trusted_proxy(
    make_service: ServiceFactory,
) -> None:
    svc = await make_service(rate_limit_max_requests=3, trusted_proxies="127.0.0.0/8")
    for i in range(4):
        r = await svc.verify(PHONE, "123456", headers={"x-forwarded-for": f"203.0.113.{i}"})
        assert r.json()["code"] == "invalid_code"
    # The proxy cannot be bypassed by a client forging an inner hop either.
    chain = {"x-forwarded-for": "10.9.9.9, 203.0.113.50"}
    replies = [
        (await svc.verify(f"+1212555018{i}", "123456", headers=chain)).json()["code"]
        for i in range(4)
    ]
    assert replies == ["invalid_code"] * 3 + ["rate_limited"]


async def test_one_ip_cannot_spray_phone_numbers(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, ip_max_phones=3, **OPEN)
    for i in range(3):
        assert (await svc.request(f"+1212555016{i}")).status_code == 200
    r = await svc.request("+12125550169")
    assert r.status_code == 429
    assert r.json()["code"] == "ip_phone_limit"
    # The same phones again are fine, and so is another client.
    assert (await svc.request("+12125550160")).status_code == 200
    assert (await svc.from_ip("198.51.100.3").request("+12125550169")).status_code == 200


async def test_global_budget_stops_sends(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, global_sms_per_hour=3, **OPEN)
    for i in range(3):
        assert (await svc.from_ip(f"198.51.100.{i}").request(f"+1212555017{i}")).status_code == 200
    r = await svc.from_ip("198.51.100.200").request("+447400183751")
    assert r.status_code == 503
    assert r.json()["code"] == "global_budget"
    assert int(r.headers["retry-after"]) >= 1
    assert len(sender.sent) == 3


async def test_country_budget_stops_one_country_only(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, country_sms_budgets="GB=2", **OPEN)
    for phone in ("+447400183751", "+447400183752"):
        assert (await svc.request(phone)).status_code == 200
    r = await svc.request("+447400183753")
    assert r.status_code == 429
    assert r.json()["code"] == "country_budget"
    assert (await svc.request(PHONE)).status_code == 200


async def test_pumping_burst_to_one_prefix_is_blocked(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, pump_prefix_min_sends=5, ip_max_phones=100, **OPEN)
    for i in range(5):
        assert (await svc.request(f"+121255502{i:02d}")).status_code == 200
    burst = await svc.request("+12125550299")
    assert burst.status_code == 429
    assert burst.json()["code"] == "prefix_blocked"
    # The block sticks for the prefix, whoever asks...
    later = await svc.from_ip("198.51.100.4").request("+12125550298")
    assert later.json()["code"] == "prefix_blocked"
    # ...while other prefixes and countries keep working.
    assert (await svc.request("+14155550123")).status_code == 200
    assert (await svc.request(UK)).status_code == 200
    assert len(sender.sent) == 7


async def test_lockout_across_codes(make_service: ServiceFactory) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, phone_lockout_threshold=7, **OPEN)
    await svc.request(PHONE)
    for _ in range(5):
        await svc.verify(PHONE, other(sender.last_code(PHONE)))
    await svc.request(PHONE)  # a fresh code resets the per-code limit...
    await svc.verify(PHONE, other(sender.last_code(PHONE)))
    await svc.verify(PHONE, other(sender.last_code(PHONE)))
    # ...but not the per-phone failure count: 7 failures lock the phone.
    r = await svc.verify(PHONE, sender.last_code(PHONE))
    assert r.status_code == 429
    assert r.json()["code"] == "phone_locked"
    assert int(r.headers["retry-after"]) >= 59


async def test_refused_send_is_not_charged(make_service: ServiceFactory) -> None:
    """A refusal by one limit charges none of the others."""
    sender = CapturingSender()
    svc = await make_service(sender=sender, global_sms_per_hour=2, **OPEN)
    assert (await svc.request(PHONE)).status_code == 200
    assert (await svc.request(UK)).status_code == 200
    for _ in range(3):
        assert (await svc.request("+14155550123")).json()["code"] == "global_budget"
    # The refused sends did not eat into the phone's own window.
    svc2 = await make_service(sender=sender, global_sms_per_hour=100, **OPEN)
    for _ in range(4):
        assert (await svc2.request("+14155550123")).status_code == 200


async def test_an_ipv6_host_rotating_inside_its_64_is_one_client(
    make_service: ServiceFactory,
) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, ip_max_phones=2, **OPEN)
    host = "2001:db8:aaaa:1:"
    for i in range(2):
        assert (await svc.from_ip(f"{host}:{i + 1}").request(f"+1212555016{i}")).status_code == 200
    r = await svc.from_ip(f"{host}ffff:ffff:ffff:ffff").request("+12125550169")
    assert r.json()["code"] == "ip_phone_limit"
    # Another /64 is another client, with a budget of its own.
    assert (await svc.from_ip("2001:db8:aaaa:2::1").request("+12125550169")).status_code == 200
    assert len(sender.sent) == 3


async def test_an_ipv6_host_rotating_inside_its_64_shares_the_request_limit(
    make_service: ServiceFactory,
) -> None:
    svc = await make_service(rate_limit_max_requests=2)
    codes = [
        (await svc.from_ip(f"2001:db8:bbbb:1::{i + 1}").verify(PHONE, "123456")).json()["code"]
        for i in range(3)
    ]
    assert codes == ["invalid_code", "invalid_code", "rate_limited"]
    mapped = [
        (await svc.from_ip(address).verify(PHONE, "123456")).json()["code"]
        for address in ("198.51.100.9", "::ffff:198.51.100.9", "198.51.100.9")
    ]
    assert mapped == ["invalid_code", "invalid_code", "rate_limited"]
    other_net = await svc.from_ip("2001:db8:bbbb:2::1").verify(PHONE, "123456")
    assert other_net.json()["code"] == "invalid_code"
