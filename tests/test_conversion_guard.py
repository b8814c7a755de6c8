"""The conversion-aware guard and what operators see and undo, through the use cases,
on every store, with an injected clock.

Pumped numbers never enter their codes, so a range whose settled sends stop
converting is blocked; real traffic converts and never is. A send is settled once
its code can no longer be verified (its bucket ended a code lifetime ago).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from otpgate.domain.admin import BlockNotFound, DefenceAdmin, InvalidOverride
from otpgate.domain.codes import CodeHasher
from otpgate.domain.errors import InvalidCode, LimitExceeded, RangeDenied
from otpgate.domain.limits import AbusePolicy, Lockout, PumpingGuard
from otpgate.domain.policy import OtpPolicy
from otpgate.domain.service import OtpService
from otpgate.store.redis.store import RedisStore
from otpgate.store.reference import MemoryStore
from otpgate.store.sqlite import SqliteStore
from tests.fakes import CapturingSender, RecordingSigner

# An hour boundary, far from any real clock (Redis's own expiry never interferes).
T0 = 1_900_000_800.0
TTL = 300
PUMPED = "+4479112"  # a 7-digit prefix of UK mobiles
REAL = "+1212555"


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.integration)])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    store: Any
    if request.param == "redis":
        store = RedisStore(
            request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("redis_prefix")
        )
    elif request.param == "sqlite":
        store = SqliteStore(tmp_path / "otpgate.sqlite3")
    else:
        store = MemoryStore()
    yield store
    await store.close()


class World:
    """The service and the operators' view of one store, on a clock the test moves."""

    def __init__(self, store: Any, **pumping: Any) -> None:
        self.now = T0
        self.sender = CapturingSender()
        pumping = {"prefix_min_sends": 10_000, "country_min_sends": 10_000} | pumping
        guard = PumpingGuard(block_seconds=3600, **pumping)
        limits = AbusePolicy(
            resend_cooldown_seconds=0,
            phone_sends=100,
            ip_max_phones=100_000,
            country_sms_per_hour=100_000,
            global_sms_per_hour=100_000,
            pumping=guard,
            lockout=Lockout(threshold=3, base_seconds=60),
        )
        self.service = OtpService(
            store,
            self.sender,
            CodeHasher(b"k" * 32),
            OtpPolicy(ttl_seconds=TTL, phone_check="possible"),
            limits,
            RecordingSigner(),
            clock=lambda: self.now,
        )
        self.admin = DefenceAdmin(store, limits, clock=lambda: self.now)
        self.serial = 0

    async def send(self, prefix: str, *, verify: bool = False) -> str:
        self.serial += 1
        digits = (12 if prefix.startswith("+1") else 13) - len(prefix)  # NANP or UK length
        phone = f"{prefix}{self.serial % 10**digits:0{digits}d}"
        await self.service.request_code(phone, f"198.51.100.{self.serial % 250}")
        if verify:
            await self.service.verify_code(phone, self.sender.last_code(phone))
        return phone

    async def sends(self, prefix: str, count: int, verified: int = 0) -> None:
        for n in range(count):
            await self.send(prefix, verify=n < verified)
            self.now += 1

    def settle(self) -> None:
        """Past the end of the current bucket and a code's lifetime after it."""
        self.now += 300 + TTL + 1


async def test_a_range_that_never_verifies_is_blocked(any_store: Any) -> None:
    world = World(any_store)
    await world.sends(PUMPED, 50)
    world.settle()
    with pytest.raises(LimitExceeded) as refused:
        await world.send(PUMPED)
    assert refused.value.code == "prefix_blocked"
    (block,) = await world.admin.blocks()
    assert (block.kind, block.scope, block.reason) == (
        "prefix_blocked",
        "prefix:4479112",
        "conversion",
    )
    assert block.counts == {"sends": 50, "approvals": 0}
    assert block.ends_at == pytest.approx(world.now + 3600)
    # Another range is not affected.
    await world.send(REAL)


async def test_a_range_that_verifies_is_not_blocked(any_store: Any) -> None:
    world = World(any_store)
    await world.sends(PUMPED, 50, verified=40)
    world.settle()
    await world.send(PUMPED)
    assert await world.admin.blocks() == []
    stats = {s.scope: s for s in await world.admin.stats()}
    pumped = stats["prefix:4479112"]
    assert (pumped.hour_sends, pumped.hour_approvals) == (51, 40)
    assert (pumped.day_sends, pumped.day_approvals) == (51, 40)
    assert stats["country:GB"].day_sends == 51


async def test_too_few_sends_are_not_judged(any_store: Any) -> None:
    world = World(any_store)
    await world.sends(PUMPED, 49)
    world.settle()
    await world.send(PUMPED)  # 49 settled sends: under CONVERSION_MIN_SENDS


async def test_unsettled_sends_are_not_judged(any_store: Any) -> None:
    """Codes still live may yet be verified: a burst is the surge guard's business."""
    world = World(any_store)
    await world.sends(PUMPED, 80)
    await world.send(PUMPED)


async def test_a_day_of_steady_real_traffic_blocks_nothing(any_store: Any) -> None:
    world = World(any_store)
    prefixes = [f"+1{area}555" for area in (212, 646, 718, 917, 305, 415)]
    for _hour in range(24):
        for n in range(36):  # 36 sends an hour, across 6 ranges; about 70% verified
            await world.send(prefixes[n % 6], verify=n % 10 < 7)
            world.now += 100
    world.now -= 100  # still in the last hour sent in: the day is these 24 hours
    assert await world.admin.blocks() == []
    stats = {s.scope: s for s in await world.admin.stats()}
    assert stats["country:US"].day_sends == 24 * 36
    assert stats["country:US"].day_approvals == 24 * 27  # n % 10 < 7 of n < 36


async def test_an_exempt_range_is_never_blocked(any_store: Any) -> None:
    world = World(any_store)
    assert await world.admin.set_override("exempt", "prefix:447911", True)
    await world.sends(PUMPED, 50)
    world.settle()
    await world.sends(PUMPED, 50)
    assert await world.admin.blocks() == []
    # Removed from the list, the range's record blocks it at once.
    assert await world.admin.set_override("exempt", "prefix:447911", False)
    with pytest.raises(LimitExceeded):
        await world.send(PUMPED)


async def test_a_denied_range_is_refused_and_its_neighbours_are_not(any_store: Any) -> None:
    world = World(any_store)
    await world.admin.set_override("deny", "prefix:4479112", True)
    with pytest.raises(RangeDenied):
        await world.send(PUMPED)
    await world.send("+4479122")
    await world.admin.set_override("deny", "country:GB", True)
    with pytest.raises(RangeDenied):
        await world.send("+4479122")
    assert await world.admin.overrides() == {
        "deny": ["country:GB", "prefix:4479112"],
        "exempt": [],
    }
    with pytest.raises(InvalidOverride):
        await world.admin.set_override("deny", "prefix:+44", True)


async def test_a_lifted_block_lets_the_range_through_until_it_would_have_ended(
    any_store: Any,
) -> None:
    world = World(any_store)
    await world.sends(PUMPED, 50)
    world.settle()
    with pytest.raises(LimitExceeded):
        await world.send(PUMPED)
    lifted = await world.admin.lift("prefix_blocked", "prefix:4479112")
    assert lifted.reason == "conversion"
    await world.sends(PUMPED, 5)  # the record is as bad as before: lifted all the same
    assert await world.admin.blocks() == []
    with pytest.raises(BlockNotFound):
        await world.admin.lift("prefix_blocked", "prefix:4479112")
    world.now += 3600  # the block would have ended: the guard judges the range again
    await world.sends(PUMPED, 50)
    world.settle()
    with pytest.raises(LimitExceeded):
        await world.send(PUMPED)


async def test_a_surge_block_is_listed_with_its_counts(any_store: Any) -> None:
    world = World(any_store, conversion=False, prefix_min_sends=5)
    await world.sends(PUMPED, 5)
    with pytest.raises(LimitExceeded):
        await world.send(PUMPED)
    (block,) = await world.admin.blocks()
    assert (block.reason, block.counts) == ("surge", {"sends": 6, "previous": 0})


async def test_a_locked_phone_is_listed_and_can_be_unlocked(any_store: Any) -> None:
    world = World(any_store)
    phone = await world.send(REAL)
    wrong = "000000" if world.sender.last_code(phone) != "000000" else "111111"
    for _ in range(3):  # the lockout's threshold
        with pytest.raises(InvalidCode):
            await world.service.verify_code(phone, wrong)
    (block,) = await world.admin.blocks()
    assert (block.kind, block.scope, block.reason) == ("phone_locked", phone, "failures")
    assert block.counts == {"failures": 3}
    report = await world.admin.phone(phone)
    assert report.state.failures == 3
    assert report.locked_until == pytest.approx(world.now + 60)
    assert report.state.code_pending and report.state.attempts == 3
    assert report.state.verification is not None
    assert report.state.verification.status == "pending"
    await world.admin.lift("phone_locked", phone)
    assert await world.admin.blocks() == []
    assert (await world.admin.phone(phone)).locked_until is None
    assert (await world.service.verify_code(phone, world.sender.last_code(phone))).phone
