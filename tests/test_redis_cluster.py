"""redis+cluster://: otpgate on a Redis Cluster, across processes and through failovers.

One cluster of three masters and three replicas for the module (tests/redis_cluster.py)
and two ``otpgate serve`` processes sharing it under REDIS_KEY_PREFIX=otpgate:, whose
keys are all in the slot of ``{otpgate}``. A code sent through one process verifies
through the other, and the limits are counted across both. Then the master serving
that slot is failed over, by hand (CLUSTER FAILOVER, as managed services do for
maintenance) and by SIGKILL: every failure meanwhile must be a 503 (StoreUnavailable),
none may outlast the store's timeout, and what was written before survives.
The SIGKILL test comes last, and brings the killed node back as a replica.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis as AsyncRedis

from otpgate.config.settings import ConfigError
from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.limits import Lockout, Quota
from otpgate.domain.ports import Issued, RequestWindow, SendRequest
from otpgate.store.redis.slot import key_slot
from otpgate.store.redis.store import RedisStore
from otpgate.store.redis.tls import RedisTls
from otpgate.store.redis.url import HostPort
from otpgate.wiring import check_store
from tests.conftest import make_settings
from tests.redis_cluster import Cluster
from tests.redis_sentinel import wait_until
from tests.redis_server import PrivateRedis, ServerTls
from tests.service_process import ServiceProcess
from tests.test_redis_sentinel import LONGEST_CALL, TIMEOUT, Follower, follow
from tests.tls_certs import TestAuthority

pytestmark = pytest.mark.integration

PREFIX = "otpgate:"  # REDIS_KEY_PREFIX's default, written {otpgate}:
SLOT = key_slot("{otpgate}")
REQUEST, VERIFY = "/api/v1/request-otp", "/api/v1/verify-otp"
CODE_HASH = b"\x51" * 32
# Nothing but the limits a test is about may refuse a send: every request comes from
# 127.0.0.1, and the failover test sends to many numbers of one prefix.
OPEN = {
    "REDIS_TIMEOUT_SECONDS": str(TIMEOUT),
    "RATE_LIMIT_MAX_REQUESTS": "100000",
    "IP_MAX_PHONES": "100000",
    "PHONE_NUMBER_CHECK": "possible",
    "PUMPING_GUARD": "false",
    "CONVERSION_GUARD": "false",
}


@pytest.fixture(scope="module")
def pair(
    redis_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServiceProcess]]:
    """Two `otpgate serve` processes (fast paths on) sharing the cluster."""
    workdir = tmp_path_factory.mktemp("cluster-services")
    procs = [
        ServiceProcess(workdir, REDIS_URL=redis_cluster.url, REDIS_KEY_PREFIX=PREFIX, **OPEN)
        for _ in range(2)
    ]
    try:
        for p in procs:
            p.wait_ready()
        yield procs
    finally:
        for p in procs:
            p.stop()


def code_sent(service: ServiceProcess, phone: str) -> str:
    """The code the console sender printed for ``phone`` (one send per phone here)."""
    line = service.wait_for_line(lambda line: f"[console SMS to {phone}]" in line, timeout=5)
    match = re.search(r"\b(\d{6})\b", line.split("]", 1)[1])
    assert match, line
    return match.group(1)


# -- the prefix, and start-up ---------------------------------------------------------


async def test_every_key_is_in_the_slot_of_the_prefix_tag(redis_cluster: Cluster) -> None:
    store = RedisStore(redis_cluster.url, prefix="check:")
    try:
        assert store.prefix == "{check}:"
        now = time.time()
        request = SendRequest("+12125550160", CODE_HASH, 300, 60, send_id="s1")
        assert isinstance(await store.issue(request, now, RequestWindow("ip:x", 9, 60_000)), Issued)
        assert await store.consume("+12125550160", CODE_HASH, now) is True
        node = redis_cluster.master_of(key_slot("{check}"))
        with node.client() as client:
            keys = client.keys("*check*")
            assert keys, "nothing written"
            slots = {client.cluster("keyslot", k) for k in keys}
            assert slots == {key_slot("{check}")}  # Redis's own arithmetic agrees
    finally:
        await store.close()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "stock"])
def test_check_store_takes_a_cluster(
    redis_cluster: Cluster, tmp_path: Path, fast_path: bool
) -> None:
    # Any one live node is seed enough: the others are learnt from it.
    url = redis_cluster.seeds(redis_cluster.nodes[-1])
    check_store(make_settings(tmp_path, redis_url=url, fast_path=fast_path))


def test_a_cluster_url_to_a_standalone_server_stops_start_up(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    url = f"redis+cluster://127.0.0.1:{private_redis.port}"
    for fast_path in (True, False):
        with pytest.raises(ConfigError) as refused:
            check_store(make_settings(tmp_path, redis_url=url, fast_path=fast_path))
        message = str(refused.value)
        assert message.startswith("REDIS_URL: no cluster node would say where slot")
        assert "cluster support disabled" in message


def test_a_refused_password_stops_start_up(tmp_path: Path) -> None:
    """A node that refuses the URL's password cannot say where the slot is: a wrong
    configuration, not an outage."""
    server = PrivateRedis(tmp_path / "locked", "--requirepass", "right-password")
    server.start()
    try:
        url = f"redis+cluster://:hunter2@127.0.0.1:{server.port}"
        with pytest.raises(ConfigError) as refused:
            check_store(make_settings(tmp_path, redis_url=url))
        message = str(refused.value)
        assert message.startswith("REDIS_URL: no cluster node would say where slot"), message
        assert "invalid username-password pair" in message
        assert "hunter2" not in message
    finally:
        server.stop()


def test_no_reachable_seed_at_start_up_is_an_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = "redis+cluster://127.0.0.1:1,127.0.0.1:2"
    for fast_path in (True, False):
        caplog.clear()
        settings = make_settings(
            tmp_path, redis_url=nobody, redis_timeout_seconds=0.3, fast_path=fast_path
        )
        check_store(settings)
        assert "redis store not reachable at start-up" in caplog.text


async def test_no_reachable_seed_answers_store_unavailable_in_time() -> None:
    for fast_path in (True, False):
        store = RedisStore("redis+cluster://127.0.0.1:1", timeout=TIMEOUT, fast_path=fast_path)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.hit_window(RequestWindow("w", 10, 60_000), time.time())
            assert time.monotonic() - started < LONGEST_CALL
        finally:
            await store.close()


async def test_rediss_cluster_verifies_every_node_it_connects_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """rediss+cluster://: TLS only nodes (the cluster bus too), both links, the
    certificate verified against REDIS_TLS_CA_FILE for every node's address, and one
    signed by another CA refused at start-up as on one server."""
    authority, other = TestAuthority(tmp_path, "test"), TestAuthority(tmp_path, "other")
    cert = authority.issue("server", hosts=("127.0.0.1",))
    bus = authority.issue("node", client=True)
    cluster = Cluster(
        tmp_path / "tls-cluster",
        replicas=0,
        tls=ServerTls(cert.cert, cert.key, authority.ca_file),
        bus_client=(bus.cert, bus.key),
    )
    try:
        cluster.start()
        assert cluster.url.startswith("rediss+cluster://")
        for fast_path in (True, False):
            # What this checks is the certificates, not the time: three TLS handshakes
            # may take longer than the default 0.5 s while the suite loads the machine.
            store = RedisStore(
                cluster.url,
                prefix="tls:",
                timeout=5,
                fast_path=fast_path,
                tls=RedisTls(authority.ca_file),
            )
            try:
                assert await store.configuration_problem() is None
                now, phone = time.time(), f"+1212555017{int(fast_path)}"
                request = SendRequest(phone, CODE_HASH, 300, 0, send_id=phone)
                assert isinstance(await store.issue(request, now), Issued)
                assert await store.consume(phone, CODE_HASH, now) is True
            finally:
                await store.close()
            settings = make_settings(
                tmp_path,
                redis_url=cluster.url,
                redis_tls_ca_file=other.ca_file,
                fast_path=fast_path,
            )
            with pytest.raises(ConfigError) as refused:
                await asyncio.to_thread(check_store, settings)  # it runs its own event loop
            assert str(refused.value).startswith(
                "REDIS_URL: the server's TLS certificate was refused: "
            )
    finally:
        cluster.stop()


# -- two processes, one cluster -------------------------------------------------------


def test_a_code_sent_by_one_process_verifies_through_the_other(
    pair: list[ServiceProcess],
) -> None:
    a, b = pair
    phone = "+12125550161"
    assert a.post(REQUEST, {"phoneNumber": phone}).status_code == 200
    code = code_sent(a, phone)
    assert b.post(VERIFY, {"phoneNumber": phone, "otp": code}).status_code == 200
    again = a.post(VERIFY, {"phoneNumber": phone, "otp": code})
    assert (again.status_code, again.json()["code"]) == (400, "invalid_code")


def test_the_cooldown_holds_across_processes(pair: list[ServiceProcess]) -> None:
    a, b = pair
    phone = "+12125550162"
    assert a.post(REQUEST, {"phoneNumber": phone}).status_code == 200
    refused = b.post(REQUEST, {"phoneNumber": phone})
    assert (refused.status_code, refused.json()["code"]) == (429, "resend_cooldown")
    assert 55 <= int(refused.headers["retry-after"]) <= 60


def test_the_guess_limit_is_counted_across_processes(pair: list[ServiceProcess]) -> None:
    a, b = pair
    phone = "+12125550163"
    assert a.post(REQUEST, {"phoneNumber": phone}).status_code == 200
    wrong = "000000" if code_sent(a, phone) != "000000" else "111111"
    answers = [
        (a, b)[i % 2].post(VERIFY, {"phoneNumber": phone, "otp": wrong}).json()["code"]
        for i in range(6)
    ]
    assert answers == ["invalid_code"] * 5 + ["too_many_attempts"]


# -- a slot half-way through a migration -----------------------------------------------


async def _connected(store: RedisStore, window: RequestWindow) -> int:
    """One hit on ``window``, retried while the store's first connection to the cluster
    (asking a node where the slot is, then connecting to it) outlasts its timeout on a
    loaded machine; what the caller tests comes after."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return (await store.hit_window(window, time.time())).count
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise


async def test_a_slot_being_migrated_answers_503_not_500(redis_cluster: Cluster) -> None:
    """While otpgate's slot moves to another master (CLUSTER SETSLOT MIGRATING/IMPORTING,
    what resharding does), a step whose keys are not all on the source is answered
    -ASK or -TRYAGAIN. The fast link does not follow -ASK: a 503, at once; redis-py's
    follows it (ASKING), which serves a step whose keys are all new on the target."""
    prefix = "migrating:"
    slot = key_slot("{migrating}")
    source = redis_cluster.master_of(slot)
    target = next(n for n in redis_cluster.nodes if n.running and n is not source and is_master(n))
    stores = {
        fast: RedisStore(redis_cluster.url, prefix=prefix, timeout=TIMEOUT, fast_path=fast)
        for fast in (True, False)
    }
    window = RequestWindow("before", 100, 60_000)
    with source.client() as s, target.client() as t:
        source_id, target_id = s.cluster("myid"), t.cluster("myid")
    try:
        # A key on the source, and both links connected.
        counted = max([await _connected(store, window) for store in stores.values()])
        with target.client() as t:
            t.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        with source.client() as s:
            s.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        # A key still on the source: served there.
        assert (await stores[True].hit_window(window, time.time())).count == counted + 1
        # A key on neither: -ASK.
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await stores[True].hit_window(RequestWindow("new-fast", 100, 60_000), time.time())
        assert time.monotonic() - started < LONGEST_CALL
        hit = await stores[False].hit_window(RequestWindow("new-stock", 100, 60_000), time.time())
        assert hit.count == 1
    finally:
        with target.client() as t:  # what the stock link wrote there, gone with the move
            asking = t.pipeline(transaction=False)
            asking.execute_command("ASKING")
            asking.execute_command("DEL", "{migrating}:{new-stock}:w")
            asking.execute()
        for node in (source, target):
            with node.client() as client:
                client.execute_command("CLUSTER SETSLOT", slot, "STABLE")
        for store in stores.values():
            await store.close()


def is_master(node: PrivateRedis) -> bool:
    with node.client() as client:
        return bool(client.info("replication")["role"] == "master")


# -- failovers ------------------------------------------------------------------------


BURST = 20  # concurrent calls in one follower's call


class NotYet(Exception):
    """The call succeeded, on the old master still."""


async def test_a_manual_failover_moves_both_links_without_failing_calls(
    redis_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """CLUSTER FAILOVER on the replica, as a managed service does for maintenance: the
    old master answers -MOVED from then on, and both links follow it within the call.
    Each call is a burst of concurrent ones, so the fast link has many commands on
    their way when the first -MOVED comes back: each is sent again, none runs twice."""
    old = redis_cluster.master_of(SLOT)
    new = redis_cluster.replica_of(old)
    stores = {
        name: RedisStore(redis_cluster.url, prefix=PREFIX, timeout=TIMEOUT, fast_path=fast)
        for name, fast in (("fast", True), ("stock", False))
    }
    window = RequestWindow("manual-failover", 1_000_000, 60_000)

    def on(store: RedisStore):  # type: ignore[no-untyped-def]
        async def call() -> None:
            await asyncio.gather(*(store.hit_window(window, time.time()) for _ in range(BURST)))
            if redis_cluster.serving(SLOT) is not new:
                raise NotYet()

        return call

    try:
        for store in stores.values():
            await store.hit_window(window, time.time())
        with new.client() as client:
            assert client.cluster("failover") is True
        started = time.monotonic()
        followers = await asyncio.gather(
            *(follow(name, on(store), started, expected=NotYet) for name, store in stores.items())
        )
        report(capsys, "manual failover", followers)
        assert stores["fast"]._conn._address == HostPort("127.0.0.1", new.port)  # type: ignore[attr-defined]
        for f in followers:
            assert f.followed_after is not None, f"{f.name} never reached the new master"
            assert set(f.failures) <= {"NotYet"}, f"{f.name} failed calls: {f.failures}"
            assert f.longest < LONGEST_CALL, f"{f.name}: a call took {f.longest:.2f}s"
        # Every call counted once: a moved call ran on the new master only.
        expected = len(stores) + BURST * sum(len(f.failures) + 1 for f in followers)
        for store in stores.values():
            expected += 1
            assert (await store.hit_window(window, time.time())).count == expected
    finally:
        for store in stores.values():
            await store.close()
    wait_until("the cluster healthy again", redis_cluster.healthy)


def report(capsys: pytest.CaptureFixture[str], what: str, followers: list[Follower]) -> None:
    with capsys.disabled():
        print()
        for f in followers:
            after = "never" if f.followed_after is None else f"{f.followed_after:.2f}s"
            print(
                f"cluster {what}, {f.name}: first success {after} after it began,"
                f" {len(f.failures)} failures before it ({sorted(set(f.failures))}),"
                f" longest call {f.longest * 1000:.0f} ms"
            )


async def test_a_killed_master_is_replaced_and_nothing_written_before_is_lost(
    redis_cluster: Cluster, pair: list[ServiceProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL of the master serving otpgate's slot: its replica takes over after
    cluster-node-timeout (1 s) and an election; meanwhile both links and both processes
    answer 503 quickly, then succeed on the new master, where the code sent before the
    kill still verifies, and its send is still counted and its cooldown still holds."""
    a, b = pair
    master = redis_cluster.master_of(SLOT)
    replica = redis_cluster.replica_of(master)
    fast = RedisStore(redis_cluster.url, prefix=PREFIX, timeout=TIMEOUT, fast_path=True)
    stock = RedisStore(redis_cluster.url, prefix=PREFIX, timeout=TIMEOUT, fast_path=False)
    clients = [httpx.AsyncClient(base_url=p.base, timeout=5) for p in pair]
    phone = "+12125550164"
    try:
        assert a.post(REQUEST, {"phoneNumber": phone}).status_code == 200
        code = code_sent(a, phone)
        store_phones = {fast: "+12125550165", stock: "+12125550166"}
        for store, store_phone in store_phones.items():
            request = SendRequest(store_phone, CODE_HASH, 300, 0, send_id=store_phone)
            assert isinstance(await store.issue(request, time.time()), Issued)
        with master.client() as client:
            # WAIT counts this connection's writes: one more write after otpgate's, once
            # on the replica, means theirs are there too (one replication stream).
            client.set("{otpgate}:replicated", 1)
            assert client.wait(1, 1000) == 1

        phones = iter(range(2000, 10_000))
        statuses: list[int] = []

        def http_call(client: httpx.AsyncClient):  # type: ignore[no-untyped-def]
            async def call() -> None:
                number = f"+1212555{next(phones)}"
                answer = await client.post(REQUEST, json={"phoneNumber": number})
                statuses.append(answer.status_code)
                if answer.status_code == 503:
                    assert answer.json()["code"] == "store_unavailable"
                    raise StoreUnavailable()
                assert answer.status_code == 200, answer.text

            return call

        watcher = AsyncRedis(port=replica.port)

        async def promoted() -> None:  # the cluster's own time, for comparison
            slots = await watcher.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
            if not any(
                int(first) <= SLOT <= int(last) and int(owner[1]) == replica.port
                for first, last, owner, *_ in slots
            ):
                raise StoreUnavailable()

        window = RequestWindow("sigkill", 1_000_000, 60_000)
        killed_at = time.monotonic()
        master.stop()  # SIGKILL, by pid
        promotion, *followers = await asyncio.gather(
            follow("the replica serving the slot", promoted, killed_at),
            follow("fast", lambda: fast.hit_window(window, time.time()), killed_at),
            follow("stock", lambda: stock.hit_window(window, time.time()), killed_at),
            follow("http a (fast)", http_call(clients[0]), killed_at),
            follow("http b (fast)", http_call(clients[1]), killed_at),
        )
        await watcher.aclose()
        with capsys.disabled():
            print(f"\ncluster SIGKILL: {promotion.name} after {promotion.followed_after:.2f}s")
        report(capsys, "SIGKILL", followers)
        assert promotion.followed_after is not None
        for f in followers:
            assert f.followed_after is not None, f"{f.name} never followed the new master"
            assert set(f.failures) <= {"StoreUnavailable"}
            assert f.longest < LONGEST_CALL, f"{f.name}: a call took {f.longest:.2f}s"
        assert set(statuses) <= {200, 503}, statuses

        # What was written before the kill, on the new master: the send is still
        # counted, the cooldown still holds, the code verifies (through the other
        # process), the stores' codes too.
        sends = Quota("phone_send_limit", phone, 5, 600)  # PHONE_SEND_* defaults
        state = await fast.phone_state(phone, time.time(), sends)
        assert (state.sends_in_window, state.code_pending) == (1, True)
        assert state.cooldown_until is not None
        refused = b.post(REQUEST, {"phoneNumber": phone})
        assert (refused.status_code, refused.json()["code"]) == (429, "resend_cooldown")
        assert b.post(VERIFY, {"phoneNumber": phone, "otp": code}).status_code == 200
        for store, store_phone in store_phones.items():
            attempt = await store.begin_verify(store_phone, 300, time.time(), Lockout())
            assert attempt.code_hash == CODE_HASH
            assert await store.consume(store_phone, CODE_HASH, time.time()) is True
    finally:
        for client in clients:
            await client.aclose()
        await fast.close()
        await stock.close()
    # The killed node comes back (its nodes.conf kept) as the new master's replica.
    master.start()
    wait_until("the killed node back, as a replica", redis_cluster.healthy)
    assert redis_cluster.serving(SLOT) is replica
