"""One sanity run and one measured run of a scenario against one target.

A sanity run is short, counts every status code and fails loudly on any
unexpected one: a benchmark of 429s or 500s would be fast and meaningless.
A measured run does not count statuses (that slows wrk down) but still checks
the totals wrk reports, and records CPU% and peak RSS of everything involved.
"""

from __future__ import annotations

import http.client
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson

from bench import loadgen, machine, procfs
from bench.procs import Managed
from bench.redis_cluster import RedisCluster
from bench.scenarios import Scenario
from bench.services import Redis

STUB_ALONE = Scenario(
    "stub-publish", "SNS Publish straight to the stub", 200, "sns_publish.lua", True
)


class SanityError(RuntimeError):
    pass


@dataclass
class Target:
    """What a run loads (``proc`` at ``url``) and what else it watches: ``redis`` is
    the store the service uses (all three nodes of the cluster in `cluster` mode)."""

    name: str
    proc: Managed
    url: str
    redis: Redis | RedisCluster
    stub: Managed
    stub_url: str


def stub_publishes(stub_url: str) -> int:
    host, port = stub_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/stats")
        return int(orjson.loads(conn.getresponse().read())["publishes"])
    finally:
        conn.close()


def _drive(
    scenario: Scenario, target: Target, seconds: float, connections: int, count: bool
) -> loadgen.LoadResult:
    script = scenario.script_for(target.name)
    if script is None:
        return loadgen.run_flow(target.url, target.stub_url, seconds, connections)
    return loadgen.run_wrk(target.url, script, seconds, connections, count_status=count)


def sanity(scenario: Scenario, target: Target, seconds: float, connections: int) -> None:
    """Raise SanityError unless every answer had the expected status."""
    published = stub_publishes(target.stub_url)
    stats = _drive(scenario, target, seconds, connections, count=True).stats
    statuses = {int(k): v for k, v in stats["statuses"].items()}
    expected = scenario.status_for(target.name)
    problems = []
    if not statuses.get(expected):
        problems.append(f"no HTTP {expected} at all")
    unexpected = {s: n for s, n in statuses.items() if s != expected}
    if unexpected:
        problems.append(f"unexpected statuses {unexpected}")
    if any(stats["socket_errors"].values()):
        problems.append(f"socket errors {stats['socket_errors']}")
    if stats.get("code_misses"):
        problems.append(f"{stats['code_misses']} codes never reached the stub")
    if scenario.sends_sms:
        sent = stub_publishes(target.stub_url) - published
        # The flow answers two requests per Publish; wrk may stop with up to one
        # request per connection answered by the server but not yet counted.
        answered = statuses.get(expected, 0) // (2 if scenario.lua is None else 1)
        if not answered <= sent <= answered + connections:
            problems.append(f"{answered} answers of {expected} but {sent} SMS published")
    if not target.proc.alive():
        problems.append("the process exited")
    if problems:
        raise SanityError(f"{target.name}/{scenario.name} sanity FAILED: " + "; ".join(problems))
    print(
        f"  sanity ok: {target.name}/{scenario.name}: {sum(statuses.values())} x HTTP "
        f"{expected} in {seconds:g}s",
        file=sys.stderr,
    )


def _pct(ticks: int, wall: float) -> float:
    return 100.0 * ticks / procfs.CLK_TCK / wall


def measured_run(
    scenario: Scenario,
    target: Target,
    seconds: float,
    connections: int,
    quiet_max: float,
    quiet_wait: float,
) -> dict[str, Any]:
    busy_before = machine.wait_quiet(quiet_max, quiet_wait)
    tree = target.proc.tree()
    helpers = {"redis": target.redis.pids(), "stub": {target.stub.pid}}
    ticks0 = {"service": procfs.ticks_of(tree)} | {
        k: procfs.ticks_of(v) for k, v in helpers.items()
    }
    other = machine.OtherCpu()
    other.start()
    t0 = time.monotonic()
    with procfs.RssPeak({"service": tree}) as rss:
        result = _drive(scenario, target, seconds, connections, count=False)
    wall = time.monotonic() - t0
    other_pct = other.stop()
    ticks1 = {"service": procfs.ticks_of(tree)} | {
        k: procfs.ticks_of(v) for k, v in helpers.items()
    }
    stats = result.stats
    anomalies = []
    if target.proc.tree() != tree:
        anomalies.append("process tree changed (a worker died or was restarted)")
    if any(stats["socket_errors"].values()):
        anomalies.append(f"socket errors {stats['socket_errors']}")
    expected = scenario.status_for(target.name)
    bad = stats["non_2xx_3xx"] if expected < 400 else (stats["requests"] - stats["non_2xx_3xx"])
    if bad:
        anomalies.append(f"{bad} answers were not HTTP {expected}")
    return {
        "scenario": scenario.name,
        "service": target.name,
        "requests": stats["requests"],
        "rps": stats["rps"],
        "p50_ms": stats["p50_ms"],
        "p90_ms": stats["p90_ms"],
        "p99_ms": stats["p99_ms"],
        "max_ms": stats["max_ms"],
        "cpu_pct": _pct(ticks1["service"] - ticks0["service"], wall),
        "peak_rss_mib": rss.peak["service"] / 2**20,
        "processes": len(tree),
        "redis_cpu_pct": _pct(ticks1["redis"] - ticks0["redis"], wall),
        "stub_cpu_pct": _pct(ticks1["stub"] - ticks0["stub"], wall),
        "loadgen_cpu_pct": 100.0 * result.cpu_s / wall,
        "other_cpu_pct": other_pct,
        "machine_busy_before_pct": busy_before,
        "wall_s": wall,
        "redis_keys_after": target.redis.keys(),
        "redis_used_memory_after": target.redis.used_memory(),
        "anomalies": anomalies,
        "load": stats,
    }
