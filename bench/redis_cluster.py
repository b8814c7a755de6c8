"""A private Redis Cluster of three masters, no replicas: otpgate's store in `cluster` mode.

Each node is a ``redis-server --cluster-enabled yes`` on a free loopback port,
without persistence, in the cluster's own directory under the bench's workdir;
``redis-cli --cluster create`` joins them as an operator would, and the bench
waits until every node says ``cluster_state:ok``. otpgate puts every key in one
hash slot, so one of the three masters serves it all; replicas would add
failover, which the benchmark does not exercise, and nothing it measures.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from bench.procs import Managed, ProcessGroup, free_port
from bench.services import base_env, wait_redis

MASTERS = 3
READY_SECONDS = 30.0


class RedisCluster:
    """Three cluster masters on 127.0.0.1, started through ``group`` (stopped with it)."""

    def __init__(self, group: ProcessGroup, workdir: Path, masters: int = MASTERS) -> None:
        if shutil.which("redis-cli") is None:
            raise SystemExit("bench: redis-cli missing: apt-get install -y redis-tools")
        self.dir = workdir / "redis-cluster"
        self.dir.mkdir(exist_ok=True)
        self.ports: list[int] = []
        self.procs: list[Managed] = []
        self.clients: list[redis.Redis] = []
        for _ in range(masters):
            port = free_port()
            argv = [
                "redis-server",
                *("--cluster-enabled", "yes"),
                *("--cluster-config-file", f"nodes-{port}.conf"),
                # The bus port is the port + 10000 unless given: past 65535 for a high one.
                *("--cluster-port", str(free_port())),
                *("--bind", "127.0.0.1", "--port", str(port)),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                *("--dir", str(self.dir)),
            ]
            proc = group.start(f"redis-cluster-{port}", argv, base_env(), self.dir)
            client = redis.Redis(host="127.0.0.1", port=port)
            self.ports.append(port)
            self.procs.append(proc)
            self.clients.append(client)
        for proc, client in zip(self.procs, self.clients, strict=True):
            wait_redis(client, proc)
        self._create()
        self._wait_ok()

    def _create(self) -> None:
        argv = [
            "redis-cli",
            *("--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports)),
            *("--cluster-replicas", "0", "--cluster-yes"),
        ]
        try:
            out = subprocess.run(
                argv, capture_output=True, text=True, timeout=READY_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"redis cluster: `{' '.join(argv)}` did not finish within {READY_SECONDS:g}s"
            ) from None
        if out.returncode != 0:
            raise RuntimeError(
                f"redis cluster: `{' '.join(argv)}` failed (exit {out.returncode}):\n"
                f"{out.stdout}{out.stderr}"
            )

    def _states(self) -> dict[int, str]:
        states = {}
        for port, client in zip(self.ports, self.clients, strict=True):
            try:
                states[port] = str(client.cluster("info")["cluster_state"])
            except redis.RedisError as exc:
                states[port] = f"error: {exc}"
        return states

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            states = self._states()
            if all(state == "ok" for state in states.values()):
                return
            dead = [proc.name for proc in self.procs if not proc.alive()]
            if dead or time.monotonic() > deadline:
                detail = ", ".join(f"127.0.0.1:{port} {state}" for port, state in states.items())
                why = f"{', '.join(dead)} exited" if dead else f"not ok within {READY_SECONDS:g}s"
                raise RuntimeError(f"redis cluster {why}; cluster_state: {detail}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        """otpgate's REDIS_URL: every master a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def pids(self) -> set[int]:
        return {proc.pid for proc in self.procs}

    def flush(self) -> None:
        """FLUSHALL on every master: a node flushes only the slots it serves."""
        for client in self.clients:
            client.flushall()

    def used_memory(self) -> int:
        """INFO used_memory summed over the masters (each one's baseline included)."""
        return sum(int(client.info("memory")["used_memory"]) for client in self.clients)

    def keys(self) -> int:
        return sum(int(client.dbsize()) for client in self.clients)
