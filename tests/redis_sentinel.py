"""A master, a replica and three sentinels on free loopback ports, for failover tests.

Each sentinel's file names the others and the replica (with fixed ids), so the group
is whole as soon as it starts instead of after Sentinel's 2 s hello rounds; it
decides a master is down after 1 s. Every process is stopped by its pid.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.redis_server import PrivateRedis

MASTER_NAME = "otpgate-test"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def wait_until(what: str, check: Callable[[], bool], within: float = 10) -> float:
    """Poll ``check`` until it holds; the seconds it took. Fails naming ``what``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            if check():
                return time.monotonic() - started
        except redis.RedisError:
            pass
        time.sleep(0.02)
    pytest.fail(f"not within {within}s: {what}", pytrace=False)


class SentinelGroup:
    def __init__(self, workdir: Path) -> None:
        # A full sync at once, not after the 5 s Redis waits for more replicas to join.
        no_wait = ("--repl-diskless-sync-delay", "0")
        self.master = PrivateRedis(workdir / "master", *no_wait)
        self.replica = PrivateRedis(
            workdir / "replica", *no_wait, "--replicaof", "127.0.0.1", str(self.master.port)
        )
        confs = [workdir / f"sentinel-{i}" / "sentinel.conf" for i in range(3)]
        self.sentinels = [PrivateRedis(c.parent, "--sentinel", config=c) for c in confs]
        ids = {s.port: secrets.token_hex(20) for s in self.sentinels}
        for conf, sentinel in zip(confs, self.sentinels, strict=True):
            lines = [
                f"sentinel myid {ids[sentinel.port]}",
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2",
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                f"sentinel known-replica {MASTER_NAME} 127.0.0.1 {self.replica.port}",
                *(
                    f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {port} {other}"
                    for port, other in ids.items()
                    if port != sentinel.port
                ),
            ]
            conf.parent.mkdir(parents=True)
            conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until("the replica in sync", lambda: self._replica_in_sync(self.replica))
        wait_until("every sentinel seeing the replica and the others", self._whole)

    def _replica_in_sync(self, server: PrivateRedis) -> bool:
        with server.client() as client:
            info: dict[str, Any] = client.info("replication")
            return info.get("master_link_status") == "up"

    def _whole(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(MASTER_NAME)
                if state["num-other-sentinels"] != 2 or state["num-slaves"] != 1:
                    return False
                replicas = client.sentinel_slaves(MASTER_NAME)
                if any(r["is_sdown"] or r["master-link-status"] != "ok" for r in replicas):
                    return False
        return True

    def master_port(self) -> set[int]:
        """What each sentinel now names as the master's port (one, when they agree)."""
        ports = set()
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                ports.add(int(client.sentinel_get_master_addr_by_name(MASTER_NAME)[1]))
        return ports

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            server.stop()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path / "sentinel-group")
    try:
        group.start()
        yield group
    finally:
        group.stop()
