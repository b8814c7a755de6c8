"""``python -m bench``: start everything, measure both services in turn, report.

Order of a run: Redis and the SNS stub start once; the stub is measured alone
(it must be far faster than either service, or it is what we would measure);
then for each log level, each service in turn gets a flushed Redis, a warm-up,
and per scenario an emptied Redis, a sanity run and N measured runs. Last, Redis memory per
pending code. Everything started is stopped by PID on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from bench import loadgen, phones, redis_memory, report, services
from bench.procs import ProcessGroup
from bench.redis_cluster import RedisCluster
from bench.runner import STUB_ALONE, SanityError, Target, measured_run, sanity
from bench.scenarios import SCENARIOS, Scenario

RESULTS = Path(__file__).resolve().parent / "results"
# otpgate's modes, by the service name each is reported under: its fast paths on
# (FAST_PATH=true) or off, on Redis; on the embedded SQLite store, and on a Redis
# Cluster of three masters, fast paths on.
MODES = {
    "fast": "otpgate",
    "stock": "otpgate-stock",
    "sqlite": "otpgate-sqlite",
    "cluster": "otpgate-cluster",
}


def _seconds(text: str) -> float:
    return float(text.removesuffix("s"))


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=_seconds, default=10.0, help="per measured run (10s)")
    p.add_argument("--runs", type=int, default=3, help="measured runs per scenario (3)")
    p.add_argument("--scenarios", type=_list, default=list(SCENARIOS), help=",".join(SCENARIOS))
    p.add_argument("--log-levels", type=_list, default=["info", "silent"], help="info,silent")
    p.add_argument("--connections", type=int, default=50, help="concurrent connections (50)")
    p.add_argument("--skip-node", action="store_true", help="measure otpgate only")
    p.add_argument(
        "--modes",
        type=_list,
        default=["fast"],
        help="otpgate modes side by side: fast (FAST_PATH=true), stock (FAST_PATH=false),"
        " sqlite (the embedded store instead of Redis), cluster (a Redis Cluster of 3 masters)",
    )
    p.add_argument("--workers", type=int, help="otpgate workers (default: its own, CPU count)")
    p.add_argument("--sanity-seconds", type=_seconds, default=2.0)
    p.add_argument("--warmup-seconds", type=_seconds, default=3.0)
    p.add_argument(
        "--memory-codes", type=int, default=100_000, help="0 skips the Redis memory part"
    )
    p.add_argument("--no-stub-alone", action="store_true", help="skip measuring the SNS stub alone")
    p.add_argument(
        "--quiet-max", type=float, default=25.0, help="wait until machine busy%% <= this"
    )
    p.add_argument("--quiet-wait", type=_seconds, default=60.0, help="but at most this long (60s)")
    p.add_argument(
        "--other-max", type=float, default=10.0, help="repeat a run if others used more CPU%%"
    )
    p.add_argument("--attempts", type=int, default=3, help="tries per run when the machine is busy")
    p.add_argument("--node-src", type=Path, help="Node service sources (default: shared/anchors)")
    p.add_argument(
        "--node-dir", type=Path, default=Path(tempfile.gettempdir()) / "otpgate-bench-node"
    )
    p.add_argument("--keep-logs", action="store_true", help="keep service output (large at info)")
    return p


def _log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def _meta(args: argparse.Namespace, started: dt.datetime) -> dict[str, Any]:
    import otpgate

    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "duration_s": args.duration,
        "runs": args.runs,
        "connections": args.connections,
        "log_levels": args.log_levels,
        "scenarios": args.scenarios,
        "otpgate_workers": args.workers or "default",
        "otpgate_modes": args.modes,
        "versions": {
            "otpgate": otpgate.__version__,
            "otpgate_commit": _version(["git", "-C", str(services.REPO), "rev-parse", "HEAD"]),
            "python": platform.python_version(),
            "node": _version(["node", "--version"]),
            "redis": _version(["redis-server", "--version"]),
            "wrk": _version(["wrk", "-v"]),
        },
    }


def _measure(
    scenario: Scenario, target: Target, level: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """``--runs`` runs; one during which other processes were busy is kept but repeated."""
    records = []
    for run in range(1, args.runs + 1):
        for attempt in range(1, args.attempts + 1):
            rec = measured_run(
                scenario, target, args.duration, args.connections, args.quiet_max, args.quiet_wait
            )
            rec.update(log_level=level, run=run, attempt=attempt)
            busy = rec["other_cpu_pct"] > args.other_max
            rec["discarded"] = busy and attempt < args.attempts
            records.append(rec)
            _log(
                f"{target.name}/{scenario.name}/{level} run {run}: {rec['rps']:.0f} req/s "
                f"p50={rec['p50_ms']:.2f}ms p99={rec['p99_ms']:.2f}ms cpu={rec['cpu_pct']:.0f}% "
                f"rss={rec['peak_rss_mib']:.0f}MiB redis={rec['redis_cpu_pct']:.0f}% "
                f"stub={rec['stub_cpu_pct']:.0f}% loadgen={rec['loadgen_cpu_pct']:.0f}% "
                f"other={rec['other_cpu_pct']:.0f}%"
                + (" DISCARDED (machine busy), repeating" if rec["discarded"] else "")
                + (f" ANOMALY: {'; '.join(rec['anomalies'])}" if rec["anomalies"] else "")
            )
            if not rec["discarded"]:
                break
    return records


def _run_all(args: argparse.Namespace, node_dir: Path | None, workdir: Path) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    memory: dict[str, Any] | None = None
    names = [MODES[mode] for mode in args.modes] + (["node"] if node_dir else [])
    with ProcessGroup(workdir, args.keep_logs) as group:
        redis = services.Redis(group, workdir)
        stub, stub_port = services.start_stub(group, workdir)
        stub_url = f"http://127.0.0.1:{stub_port}"
        _log(
            f"redis pid {redis.proc.pid} port {redis.port}; "
            f"sns stub pid {stub.pid} port {stub_port}"
        )
        cluster = RedisCluster(group, workdir) if "cluster" in args.modes else None
        if cluster is not None:
            _log(f"redis cluster pids {sorted(cluster.pids())} ports {cluster.ports}")
        if not args.no_stub_alone:
            target = Target("sns-stub", stub, stub_url, redis, stub, stub_url)
            sanity(STUB_ALONE, target, args.sanity_seconds, args.connections)
            runs += _measure(STUB_ALONE, target, "-", args)
        for level in args.log_levels:
            for name in names:
                redis.flush()
                if cluster is not None:
                    cluster.flush()
                # The store the service uses, whose CPU and memory the runs record.
                store: services.Redis | RedisCluster = redis
                otpgate_redis_url = redis.url(0)
                if name == MODES["cluster"]:
                    assert cluster is not None
                    store, otpgate_redis_url = cluster, cluster.url
                if name.startswith("otpgate"):
                    svc = services.start_otpgate(
                        group,
                        workdir,
                        otpgate_redis_url,
                        stub_url,
                        level,
                        args.workers,
                        fast_path=name != MODES["stock"],
                        name=name,
                        sqlite=name == MODES["sqlite"],
                    )
                else:
                    assert node_dir is not None
                    svc = services.start_node(group, node_dir, redis.url(1), stub_url, level)
                _log(f"{name} LOG_LEVEL={level}: pids {sorted(svc.proc.tree())} port {svc.port}")
                target = Target(name, svc.proc, svc.url, store, stub, stub_url)
                loadgen.run_wrk(svc.url, "verify_wrong.lua", args.warmup_seconds, args.connections)
                for scenario_name in args.scenarios:
                    scenario = SCENARIOS[scenario_name]
                    # Each scenario on an empty Redis: a wrong-code check at a random
                    # number must not meet a code the previous scenario sent there.
                    store.flush()
                    sanity(scenario, target, args.sanity_seconds, args.connections)
                    runs += _measure(scenario, target, level, args)
                group.stop(svc.proc)
        if args.memory_codes > 0:
            _log(f"Redis memory per pending code: {args.memory_codes} codes per service")
            memory = {"codes": args.memory_codes, **redis_memory.measure(redis, args.memory_codes)}
    return {"runs": runs, "redis_memory": memory}


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    bad_modes = [m for m in args.modes if m not in MODES]
    if bad_modes:
        raise SystemExit(f"bench: unknown mode(s) {bad_modes}; known: {', '.join(MODES)}")
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"bench: unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    loadgen.require_wrk()
    phones.check_all_valid()
    node_dir = None
    if args.skip_node:
        _log("--skip-node: otpgate only")
    elif shutil.which("node") is None:
        _log("node is not installed: otpgate only (no ratio)")
    else:
        node_dir = services.prepare_node(
            args.node_src or services.find_node_source(), args.node_dir
        )

    started = dt.datetime.now()
    meta = _meta(args, started)
    out = RESULTS / f"bench-{started:%Y%m%d-%H%M%S}"
    workdir = Path(tempfile.mkdtemp(prefix="otpgate-bench-"))
    # Both stop the run the same way, even where a shell started us ignoring SIGINT.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    status = 0
    try:
        data = _run_all(args, node_dir, workdir)
    except SanityError as exc:
        _log(str(exc))
        return 1
    except KeyboardInterrupt:
        _log("interrupted: everything started has been stopped")
        return 130
    finally:
        if args.keep_logs:
            _log(f"service output kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = report.summarize(data["runs"], args.other_max)
    table = report.markdown(rows, data["redis_memory"], meta)
    print(table)
    report.write_json(out.with_suffix(".json"), {"meta": meta, "summary": rows, **data})
    out.with_suffix(".md").write_text(table + "\n")
    _log(f"raw results: {out.with_suffix('.json')}")
    if any(r["anomalies"] for r in rows):
        status = 1
    return status
