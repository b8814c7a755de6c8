"""redis+sentinel://: the store finds the master through Sentinel and follows a failover.

A real group (tests/redis_sentinel.py): the master is killed with SIGKILL and both
links, and the HTTP API over the fast one, keep calling until each succeeds against
the promoted replica. Every failure meanwhile must be StoreUnavailable (503), none
may outlast the store's timeout, and a code sent before the kill still verifies.
A demoted master's -READONLY makes a link connect anew.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis as AsyncRedis

from otpgate.config.settings import ConfigError
from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.limits import Lockout
from otpgate.domain.ports import Issued, RequestWindow, SendRequest
from otpgate.http.app import create_app
from otpgate.store.redis.link import RedisConnectionError
from otpgate.store.redis.store import RedisStore
from otpgate.store.redis.url import parse_redis_url
from otpgate.wiring import build_components, check_store
from tests.conftest import make_settings
from tests.fakes import CapturingSender
from tests.redis_sentinel import MASTER_NAME, SentinelGroup, wait_until
from tests.redis_server import PrivateRedis

pytestmark = pytest.mark.integration

TIMEOUT = 0.5  # the store's, REDIS_TIMEOUT_SECONDS
# A call that waits for its reply no longer than the timeout, plus the watchdog's 50 ms
# tick and a scheduling margin on a busy machine.
LONGEST_CALL = TIMEOUT + 0.25
PACE = 0.02  # between a failed call and the next, so a refused connect does not spin
PHONE = "+12125550147"
CODE_HASH = b"\x47" * 32


@dataclass
class Follower:
    """One client calling the store until a call succeeds after the kill."""

    name: str
    failures: list[str] = field(default_factory=list)
    longest: float = 0.0
    followed_after: float | None = None


async def follow(  # type: ignore[no-untyped-def]
    name: str,
    call,
    killed_at: float,
    within: float = 15,
    expected: type[Exception] = StoreUnavailable,
) -> Follower:
    seen = Follower(name)
    while time.monotonic() - killed_at < within:
        started = time.monotonic()
        try:
            await call()
        except (StoreUnavailable, expected) as exc:
            seen.failures.append(type(exc).__name__)
        else:
            seen.followed_after = time.monotonic() - killed_at
            seen.longest = max(seen.longest, time.monotonic() - started)
            return seen
        finally:
            seen.longest = max(seen.longest, time.monotonic() - started)
        await asyncio.sleep(PACE)
    return seen


async def test_the_store_follows_a_failover(
    sentinel_group: SentinelGroup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = parse_redis_url(sentinel_group.url)
    fast = RedisStore(url, prefix="f:", timeout=TIMEOUT, fast_path=True)
    stock = RedisStore(url, prefix="s:", timeout=TIMEOUT, fast_path=False)
    settings = make_settings(
        tmp_path,
        redis_url=sentinel_group.url,
        redis_key_prefix="h:",
        redis_timeout_seconds=TIMEOUT,
        rate_limit_max_requests=100_000,
        ip_max_phones=100_000,
        phone_number_check="possible",
    )
    components = build_components(settings, sender=CapturingSender())
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(components)), base_url="http://otpgate"
    )
    try:
        now = time.time()
        for store in (fast, stock):
            assert await store.configuration_problem() is None
            request = SendRequest(PHONE, CODE_HASH, 300, 0, send_id="before-the-kill")
            assert isinstance(await store.issue(request, now), Issued)
        with sentinel_group.master.client() as master:
            assert master.wait(1, 2000) == 1  # the codes are on the replica too

        statuses: list[int] = []
        phones = iter(range(1000, 10_000))

        async def http_call() -> None:
            answer = await http.post(
                "/api/v1/request-otp", json={"phoneNumber": f"+1212555{next(phones)}"}
            )
            statuses.append(answer.status_code)
            if answer.status_code == 503:
                assert answer.json()["code"] == "store_unavailable"
                raise StoreUnavailable()
            assert answer.status_code == 200, answer.text

        window = RequestWindow("w", 1_000_000, 60_000)
        killed_at = time.monotonic()
        sentinel_group.master.stop()  # SIGKILL, by pid
        sentinel = AsyncRedis(port=sentinel_group.sentinels[0].port)

        async def promoted() -> None:  # Sentinel's own time, for comparison
            address = await sentinel.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME
            )
            if int(address[1]) != sentinel_group.replica.port:
                raise StoreUnavailable()

        promotion, *followers = await asyncio.gather(
            follow("a sentinel naming the replica", promoted, killed_at),
            follow("fast", lambda: fast.hit_window(window, time.time()), killed_at),
            follow("stock", lambda: stock.hit_window(window, time.time()), killed_at),
            follow("http (fast)", http_call, killed_at),
        )
        await sentinel.aclose()
        with capsys.disabled():
            print(f"\nsentinel failover: {promotion.name} after {promotion.followed_after:.2f}s")
            for f in followers:
                after = "never" if f.followed_after is None else f"{f.followed_after:.2f}s"
                print(
                    f"sentinel failover, {f.name}: first success {after} after the kill,"
                    f" {len(f.failures)} StoreUnavailable before it, longest call"
                    f" {f.longest * 1000:.0f} ms"
                )
        for f in followers:
            assert f.followed_after is not None, f"{f.name} never followed the new master"
            assert set(f.failures) <= {"StoreUnavailable"}
            assert f.longest < LONGEST_CALL, f"{f.name}: a call took {f.longest:.2f}s"
        assert set(statuses) <= {200, 503}, statuses
        assert sentinel_group.master_port() == {sentinel_group.replica.port}

        for store in (fast, stock):  # the code sent before the kill, on the new master
            attempt = await store.begin_verify(PHONE, 300, time.time(), Lockout())
            assert attempt.code_hash == CODE_HASH
            assert await store.consume(PHONE, CODE_HASH, time.time()) is True
    finally:
        await http.aclose()
        await components.close()
        await fast.close()
        await stock.close()


class NotYet(Exception):
    """The write succeeded, on the old master still."""


async def test_a_switchover_moves_both_links_to_the_new_master(
    sentinel_group: SentinelGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    """SENTINEL FAILOVER, as for maintenance: the old master lives on as a replica, so a
    link must not stay on it (its writes are -READONLY, and a sentinel may still name
    it for a moment: ROLE tells)."""
    url = parse_redis_url(sentinel_group.url)
    stores = {
        "fast": RedisStore(url, prefix="f:", timeout=TIMEOUT, fast_path=True),
        "stock": RedisStore(url, prefix="s:", timeout=TIMEOUT, fast_path=False),
    }
    window = RequestWindow("w", 1_000_000, 60_000)

    def on_new_master(name: str):  # type: ignore[no-untyped-def]
        store = stores[name]

        async def port() -> int:
            try:  # what the store would make of a lost connection
                info = await store._conn.execute("INFO", "server")  # bytes, or redis-py's dict
            except RedisConnectionError as exc:
                raise StoreUnavailable() from exc
            if isinstance(info, dict):
                return int(info["tcp_port"])
            return int(info.split(b"tcp_port:")[1].split(b"\r\n")[0])

        async def call() -> None:
            before = await port()
            await store.hit_window(window, time.time())
            if {before, await port()} != {sentinel_group.replica.port}:
                raise NotYet()

        return call

    try:
        for store in stores.values():
            await store.hit_window(window, time.time())
        with sentinel_group.sentinels[0].client() as sentinel:
            assert sentinel.sentinel_failover(MASTER_NAME)
        started = time.monotonic()
        followers = await asyncio.gather(
            *(follow(name, on_new_master(name), started, expected=NotYet) for name in stores)
        )
        with capsys.disabled():
            print()
            for f in followers:
                print(
                    f"sentinel switchover, {f.name}: writing to the new master"
                    f" {f.followed_after:.2f}s after SENTINEL FAILOVER, failures before it:"
                    f" {sorted(set(f.failures))}, longest call {f.longest * 1000:.0f} ms"
                )
        for f in followers:
            assert f.followed_after is not None, f"{f.name} stayed on the old master"
            assert set(f.failures) <= {"StoreUnavailable", "NotYet"}
            assert f.longest < LONGEST_CALL, f"{f.name}: a call took {f.longest:.2f}s"
    finally:
        for store in stores.values():
            await store.close()


def test_a_master_name_no_sentinel_knows_stops_start_up(
    sentinel_group: SentinelGroup, tmp_path: Path
) -> None:
    wrong = sentinel_group.url.replace(MASTER_NAME, "no-such-master")
    for fast_path in (True, False):
        settings = make_settings(tmp_path, redis_url=wrong, fast_path=fast_path)
        with pytest.raises(ConfigError) as refused:
            check_store(settings)
        assert str(refused.value) == "REDIS_URL: no sentinel knows a master named 'no-such-master'"
    check_store(make_settings(tmp_path, redis_url=sentinel_group.url))  # the right name


def test_sentinels_down_at_start_up_is_an_outage_not_a_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = "redis+sentinel://127.0.0.1:1,127.0.0.1:2/otpgate-test"
    check_store(make_settings(tmp_path, redis_url=nobody, redis_timeout_seconds=0.3))
    assert "redis store not reachable at start-up" in caplog.text


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "stock"])
async def test_a_read_only_reply_makes_the_link_connect_anew(
    tmp_path: Path, fast_path: bool
) -> None:
    """A master demoted under a live connection answers writes with -READONLY: the link
    drops that connection (503 for the call), so the next call connects anew."""
    demoted, other = PrivateRedis(tmp_path / "demoted"), PrivateRedis(tmp_path / "other")
    store = RedisStore(demoted.url, prefix="t:", timeout=TIMEOUT, fast_path=fast_path)
    link = store._conn
    try:
        demoted.start()
        other.start()
        first = await link.execute("CLIENT", "ID")
        with demoted.client() as admin:
            admin.replicaof("127.0.0.1", other.port)
        with pytest.raises(RedisConnectionError, match="READONLY"):
            await link.execute("SET", "t:k", "v")
        assert await link.execute("CLIENT", "ID") != first  # a new connection
        with pytest.raises(StoreUnavailable):
            await store.hit_window(RequestWindow("w", 10, 60_000), time.time())
        with demoted.client() as admin:
            admin.replicaof("NO", "ONE")
        wait_until("a master again", lambda: demoted.client().info()["role"] == "master")
        assert (await store.hit_window(RequestWindow("w", 10, 60_000), time.time())).count == 1
    finally:
        await store.close()
        demoted.stop()
        other.stop()
