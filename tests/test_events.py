"""Events: queued by the stores in the same step as the change they tell of, and
delivered by the relay to a real HTTP receiver, signed, in order, at least once.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from otpgate.config.settings import ConfigError, load_settings
from otpgate.delivery.event_relay import EventRelay, RelayConfig
from otpgate.delivery.webhook import sign
from otpgate.domain.codes import CodeHasher
from otpgate.domain.errors import InvalidCode, LimitExceeded, SmsUnavailable
from otpgate.domain.limits import AbusePolicy, Lockout, PumpingGuard
from otpgate.domain.policy import OtpPolicy
from otpgate.domain.service import OtpService
from otpgate.store.redis.store import RedisStore
from otpgate.store.reference import MemoryStore
from otpgate.store.sqlite import SqliteStore
from tests.fakes import CapturingSender, FailingSender, RecordingSigner
from tests.http_stub import Received, Reply, StubServer
from tests.service_process import ServiceProcess

T0 = 1_900_000_800.0
SECRET = b"s" * 32
PHONES = [f"+1212555{n:04d}" for n in range(10)]


def open_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path, events: bool) -> Any:
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        return RedisStore(url, prefix=request.getfixturevalue("redis_prefix"), events=events)
    if kind == "sqlite":
        return SqliteStore(tmp_path / "otpgate.sqlite3", events=events)
    return MemoryStore(events=events)


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    s = open_store(kind, request, tmp_path, events=True)
    yield s
    await s.close()


class World:
    def __init__(self, store: Any, sender: Any = None) -> None:
        self.now = T0
        self.sender = sender or CapturingSender()
        self.service = OtpService(
            store,
            self.sender,
            CodeHasher(b"k" * 32),
            OtpPolicy(ttl_seconds=300, max_attempts=2, phone_check="possible"),
            AbusePolicy(
                resend_cooldown_seconds=0,
                pumping=PumpingGuard(prefix_min_sends=4, country_min_sends=1000, conversion=False),
                lockout=Lockout(threshold=3),
            ),
            RecordingSigner(),
            clock=lambda: self.now,
        )

    def wrong(self, phone: str) -> str:
        return "000000" if self.sender.last_code(phone) != "000000" else "111111"


async def story(store: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every kind of event, on one store; what it queued, in order, ids left out."""
    world = World(store)
    service = world.service
    a = await service.request_code(PHONES[0], "198.51.100.1")
    await service.verify_code(PHONES[0], world.sender.last_code(PHONES[0]))  # approved
    b = await service.request_code(PHONES[1], "198.51.100.1")
    world.now += 1
    await service.request_code(PHONES[1], "198.51.100.1")  # b canceled: replaced
    c = await service.request_code(PHONES[2], "198.51.100.1")
    for _ in range(2):  # max_attempts
        with pytest.raises(InvalidCode):
            await service.verify_code(PHONES[2], world.wrong(PHONES[2]))
    with pytest.raises(LimitExceeded):  # the prefix's fifth send in the window: a surge
        await service.request_code(PHONES[3], "198.51.100.1")
    world.now += 301
    await store.sweep_expired(world.now, 100)  # PHONES[1]'s second code: expired
    failing = World(store, FailingSender(SmsUnavailable()))
    failing.now = world.now
    with pytest.raises(SmsUnavailable):
        await failing.service.request_code("+13055550100", "198.51.100.1")  # failed
    d = await service.request_code("+14155550100", "198.51.100.1")
    await service.cancel(d.verification_id)  # canceled
    events = await store.next_events("relay", world.now, 3, 100)
    assert events is not None
    ids = [int(e.id.split("-")[0]) for e in events]  # ordered (stream ids: ms-seq)
    assert ids == sorted(ids)
    del a, b, c
    return [(e.type, e.data) for e in events]


async def test_every_store_tells_the_same_story(store: Any, kind: str) -> None:
    told = await story(store)
    assert [t for t, _ in told] == [
        "verification.approved",
        "verification.canceled",
        "verification.max_attempts",
        "block.created",
        "verification.expired",
        "verification.failed",
        "verification.canceled",
    ]
    approved = told[0][1]
    assert approved["phoneNumber"] == PHONES[0]
    assert (approved["status"], approved["channel"], approved["purpose"]) == (
        "approved",
        "sms",
        None,
    )
    assert told[3][1] == {
        "kind": "prefix_blocked",
        "scope": "prefix:1212555",
        "reason": "surge",
        "endsAt": T0 + 1 + 6 * 3600,
        "counts": {"sends": 5, "previous": 0},
    }
    assert "code" not in json.dumps(told)  # never a code or its hash

    # The same on the reference (verification ids are drawn at random).
    def without_ids(events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        return [(t, {k: v for k, v in d.items() if k != "verificationId"}) for t, d in events]

    assert without_ids(told) == without_ids(await story(MemoryStore(events=True)))


async def test_no_events_are_kept_while_off(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = open_store(kind, request, tmp_path, events=False)
    try:
        world = World(store)
        await world.service.request_code(PHONES[0], "198.51.100.1")
        await world.service.verify_code(PHONES[0], world.sender.last_code(PHONES[0]))
        await store.append_event("admin.action", {"action": "x"}, world.now)
        assert await store.next_events("relay", world.now, 3, 100) == []
    finally:
        await store.close()


async def test_one_owner_delivers_at_a_time(store: Any) -> None:
    await store.append_event("admin.action", {"n": 1}, T0)
    await store.append_event("admin.action", {"n": 2}, T0)
    first = await store.next_events("a", T0, 3, 100)
    assert [e.data for e in first] == [{"n": 1}, {"n": 2}]
    assert await store.next_events("b", T0 + 1, 3, 100) is None  # a holds the lease
    await store.ack_event("b", first[0].id)  # not b's to acknowledge
    await store.ack_event("a", first[0].id)
    # a died: after its lease, b takes over where a got to.
    taken = await store.next_events("b", T0 + 4, 3, 100)
    assert [e.data for e in taken] == [{"n": 2}]
    await store.ack_event("b", taken[0].id)
    assert await store.next_events("b", T0 + 5, 3, 100) == []


# -- delivery to a real receiver -------------------------------------------------------


def verified_events(received: list[Received]) -> list[dict[str, Any]]:
    """Every delivered event whose signature checks, de-duplicated on its id."""
    seen: dict[str, dict[str, Any]] = {}
    for r in received:
        stamp = r.headers["x-otpgate-timestamp"]
        assert r.headers["x-otpgate-signature"] == sign(SECRET, stamp, r.body)
        event = json.loads(r.body)
        assert r.headers["idempotency-key"] == event["id"]
        seen.setdefault(event["id"], event)
    return list(seen.values())


async def test_the_relay_delivers_in_order_once_the_receiver_is_back(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    receiver = StubServer()
    receiver.respond = lambda _: Reply(503)  # down, answering
    receiver.start()
    clock = [T0]
    config = RelayConfig(receiver.url, SECRET, lease_seconds=3)
    try:
        store = open_store(kind, request, tmp_path, events=True)
        relay = EventRelay(store, config, clock=lambda: clock[0])
        world = World(store)
        world.now = T0
        for phone in PHONES[:3]:
            await world.service.request_code(phone, "198.51.100.1")
            await world.service.verify_code(phone, world.sender.last_code(phone))
        assert await relay.deliver_once() is False  # refused: kept, retried later
        await relay.close()
        await store.close()
        # Restarted: a new store handle, a new relay (a new owner) on the same data.
        store = open_store(kind, request, tmp_path, events=True) if kind != "memory" else store
        relay = EventRelay(store, config, clock=lambda: clock[0])
        receiver.respond = lambda _: Reply(200)
        assert await relay.deliver_once() is True  # the old owner's lease: not its turn
        clock[0] += 4
        assert await relay.deliver_once() is True
        delivered = verified_events(receiver.received)
        assert [e["type"] for e in delivered] == ["verification.approved"] * 3
        assert [e["data"]["phoneNumber"] for e in delivered] == PHONES[:3]
        assert await relay.deliver_once() is True
        assert len(verified_events(receiver.received)) == 3  # nothing twice
        await relay.close()
        await store.close()
    finally:
        receiver.stop()


@pytest.mark.integration
@pytest.mark.parametrize("store_env", ["sqlite", "redis"])
def test_events_survive_a_receiver_outage_and_a_restart(
    tmp_path: Path, store_env: str, request: pytest.FixtureRequest
) -> None:
    """otpgate serve, the receiver down, otpgate restarted: every event arrives."""
    receiver = StubServer()
    receiver.respond = lambda _: Reply(503)
    receiver.start()
    env = {
        "EVENT_WEBHOOK_URL": receiver.url,
        "EVENT_WEBHOOK_SECRET": SECRET.decode(),
        "TEST_PHONE_NUMBERS": ",".join(f"{p}=123456" for p in PHONES),
        "PHONE_NUMBER_CHECK": "possible",
        "OTP_RESEND_COOLDOWN_SECONDS": "0",
    }
    if store_env == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
        env["REDIS_KEY_PREFIX"] = request.getfixturevalue("redis_prefix")
    try:
        first = ServiceProcess(tmp_path, **env)
        first.wait_ready()
        for phone in PHONES[:2]:
            assert first.post("/api/v1/request-otp", {"phoneNumber": phone}).status_code == 200
            ok = first.post("/api/v1/verify-otp", {"phoneNumber": phone, "otp": "123456"})
            assert ok.status_code == 200
        wait_for(lambda: receiver.count >= 2)  # tried, refused
        assert "Traceback" not in first.stop()
        second = ServiceProcess(tmp_path, **env)
        second.wait_ready()
        assert second.post("/api/v1/request-otp", {"phoneNumber": PHONES[2]}).status_code == 200
        receiver.respond = lambda _: Reply(200)
        wait_for(lambda: len(verified_events(receiver.received)) >= 2)
        assert "Traceback" not in second.stop()
        delivered = verified_events(receiver.received)
        assert [(e["type"], e["data"]["phoneNumber"]) for e in delivered] == [
            ("verification.approved", PHONES[0]),
            ("verification.approved", PHONES[1]),
        ]
    finally:
        receiver.stop()


def wait_for(condition: Any, timeout: float = 20) -> None:
    """Poll a condition (the relay works in the background), bounded."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- configuration -----------------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in ("EVENT_WEBHOOK_URL", "EVENT_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"EVENT_WEBHOOK_URL": "http://127.0.0.1:9/e"}, "EVENT_WEBHOOK_SECRET: required"),
        ({"EVENT_WEBHOOK_SECRET": "s" * 32}, "EVENT_WEBHOOK_URL: required"),
        (
            {"EVENT_WEBHOOK_URL": "http://127.0.0.1:9/e", "EVENT_WEBHOOK_SECRET": "short"},
            "EVENT_WEBHOOK_SECRET: must be at least 32 characters",
        ),
    ],
)
def test_half_an_event_webhook_is_refused_naming_the_variable(
    no_env: pytest.MonkeyPatch, env: dict[str, str], problem: str
) -> None:
    for name, value in env.items():
        no_env.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert problem in str(refused.value)
    assert "s" * 32 not in str(refused.value)


def test_events_are_on_with_both_variables(no_env: pytest.MonkeyPatch) -> None:
    no_env.setenv("EVENT_WEBHOOK_URL", "http://127.0.0.1:9/e")
    no_env.setenv("EVENT_WEBHOOK_SECRET", "s" * 32)
    assert load_settings().events_on
