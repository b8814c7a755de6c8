"""A Redis Cluster of three masters and three replicas on free loopback ports.

Made by ``redis-cli --cluster create --cluster-replicas 1``, as an operator would;
``cluster-node-timeout`` is 1 s, so a killed master's replica takes over a second or
two later. Every process is stopped by its pid, and the directory is removed. With
``ServerTls``, every node is TLS only (clients, the cluster bus, replication).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis_sentinel import wait_until
from tests.redis_server import PrivateRedis, ServerTls, free_port

NODE_TIMEOUT_MS = 1000


class Cluster:
    def __init__(
        self,
        workdir: Path,
        masters: int = 3,
        replicas: int = 1,
        tls: ServerTls | None = None,
        bus_client: tuple[Path, Path] | None = None,
    ) -> None:
        """``tls``: every node TLS only, the cluster bus and replication too; nodes
        present ``bus_client`` (a client certificate and its key) to each other, since
        the bus always checks both ends."""
        self._workdir = workdir
        self._replicas = replicas
        self._tls = tls
        tls_args: tuple[str, ...] = ()
        if tls is not None:
            assert bus_client is not None, "TLS on the cluster bus needs a client certificate"
            tls_args = (
                *("--tls-cluster", "yes", "--tls-replication", "yes"),
                *("--tls-client-cert-file", str(bus_client[0])),
                *("--tls-client-key-file", str(bus_client[1])),
            )
        self.nodes = [
            PrivateRedis(
                workdir / f"node-{i}",
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                # The bus port is the port + 10000 unless given: too high for a free one.
                *("--cluster-port", str(free_port())),
                *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
                # A full sync at once, not after the 5 s Redis waits for more replicas.
                *("--repl-diskless-sync-delay", "0"),
                *tls_args,
                tls=tls,
            )
            for i in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return self.seeds(*self.nodes)

    def seeds(self, *nodes: PrivateRedis) -> str:
        """A URL naming only these nodes as seeds."""
        scheme = "rediss+cluster" if self._tls else "redis+cluster"
        return f"{scheme}://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.fail("redis-cli is not installed; the cluster tests need it", pytrace=False)
        # redis-cli checks nothing of the certificates: the nodes are the tests' own.
        tls = ["--tls", "--insecure"] if self._tls else []
        subprocess.run(
            [
                cli,
                *tls,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                *("--cluster-replicas", str(self._replicas), "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait_until("every node in a healthy cluster", self.healthy)

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok and sees every other live node up, and
        every live replica is in sync with its master."""
        live = [n for n in self.nodes if n.running]
        addresses = {f"127.0.0.1:{n.port}" for n in live}
        for node in live:
            with node.client() as client:
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                seen = client.cluster("nodes")
                up = {
                    address
                    for address, state in seen.items()
                    if "fail" not in state["flags"]
                    and (state["connected"] or "myself" in state["flags"])
                }
                if not addresses <= up:
                    return False
                info: dict[str, Any] = client.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
        return True

    def serving(self, slot: int) -> PrivateRedis | None:
        """The live master that serves ``slot`` by its own account, if any."""
        for node in self.nodes:
            if not node.running:
                continue
            with node.client() as client:
                for first, last, master, *_ in client.execute_command("CLUSTER SLOTS"):
                    if int(first) <= slot <= int(last) and int(master[1]) == node.port:
                        return node
        return None

    def master_of(self, slot: int) -> PrivateRedis:
        node = self.serving(slot)
        if node is None:
            pytest.fail(f"no live master serves slot {slot}", pytrace=False)
        return node

    def replica_of(self, master: PrivateRedis) -> PrivateRedis:
        with master.client() as client:
            replicas = client.info("replication")
        port = int(replicas["slave0"]["port"])
        return next(n for n in self.nodes if n.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="otpgate-cluster-"))
    cluster = Cluster(workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
