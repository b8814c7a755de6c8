"""Medians of the measured runs, as Markdown for people and JSON for later."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

METRICS = (
    "rps",
    "p50_ms",
    "p99_ms",
    "cpu_pct",
    "peak_rss_mib",
    "redis_cpu_pct",
    "stub_cpu_pct",
    "loadgen_cpu_pct",
    "other_cpu_pct",
)


def summarize(runs: Iterable[dict[str, Any]], other_max: float) -> list[dict[str, Any]]:
    """One row per (scenario, log level, service): the median of each metric."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        if not run.get("discarded"):
            key = (run["scenario"], run["log_level"], run["service"])
            groups.setdefault(key, []).append(run)
    rows = []
    for (scenario, level, service), group in groups.items():
        row: dict[str, Any] = {
            "scenario": scenario,
            "log_level": level,
            "service": service,
            "runs": len(group),
            "rps_each": [round(r["rps"]) for r in group],
            "anomalies": sorted({a for r in group for a in r["anomalies"]}),
            # Kept only because every attempt was disturbed: read with care.
            "noisy": any(r["other_cpu_pct"] > other_max for r in group),
        }
        for metric in METRICS:
            row[metric] = statistics.median(r[metric] for r in group)
        row["rps_per_core"] = row["rps"] / max(row["cpu_pct"] / 100, 1e-9)
        rows.append(row)
    return rows


def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}".replace(",", " ")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def markdown(
    rows: list[dict[str, Any]], memory: dict[str, Any] | None, meta: dict[str, Any]
) -> str:
    out = [
        f"## otpgate vs Node — {meta['started']} — {meta['cpus']} CPUs, "
        f"wrk -t1 -c{meta['connections']} -d{meta['duration_s']:g}s, median of {meta['runs']}",
        "",
        "| scenario | log | service | req/s | p50 ms | p99 ms | CPU% | peak RSS MiB "
        "| req/s per core | redis CPU% | stub CPU% | load gen CPU% | other CPU% |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        flag = (" ⚠" if r["anomalies"] else "") + (" ~" if r["noisy"] else "")
        out.append(
            f"| {r['scenario']} | {r['log_level']} | {r['service']}{flag} | {_fmt(r['rps'])} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_pct']:.0f} "
            f"| {r['peak_rss_mib']:.0f} | {_fmt(r['rps_per_core'])} | {r['redis_cpu_pct']:.0f} "
            f"| {r['stub_cpu_pct']:.0f} | {r['loadgen_cpu_pct']:.0f} | {r['other_cpu_pct']:.0f} |"
        )
    pairs = {(r["scenario"], r["log_level"], r["service"]): r for r in rows}
    ratio_lines = []
    for r in rows:
        node = pairs.get((r["scenario"], r["log_level"], "node"))
        if not r["service"].startswith("otpgate") or node is None:
            continue
        ratio_lines.append(
            f"| {r['scenario']} | {r['log_level']} | {r['service']} "
            f"| {_ratio(r['rps'], node['rps'])} "
            f"| {_ratio(r['p50_ms'], node['p50_ms'])} | {_ratio(r['p99_ms'], node['p99_ms'])} "
            f"| {_ratio(r['cpu_pct'], node['cpu_pct'])} "
            f"| {_ratio(r['peak_rss_mib'], node['peak_rss_mib'])} "
            f"| {_ratio(r['rps_per_core'], node['rps_per_core'])} |"
        )
    if ratio_lines:
        out += [
            "",
            "otpgate / Node (req/s above 1 = otpgate faster; latency, CPU, RSS above 1 = "
            "otpgate higher):",
            "",
            "| scenario | log | otpgate | req/s | p50 | p99 | CPU% | peak RSS | req/s per core |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|",
            *ratio_lines,
        ]
    if memory:
        count = memory["codes"]
        out += ["", f"Redis memory per pending code ({_fmt(count)} codes, INFO used_memory):", ""]
        labels = {
            "otpgate": "otpgate, per pending code (code, cooldown, the number's send log)",
            "otpgate_verification": "otpgate, the same send with its verification record",
            "otpgate_guess": "otpgate, per wrong-code verify at a number with no code",
            "node": "Node (SET otp:<phone> <code> EX 300, issued directly)",
        }
        for key, label in labels.items():
            m = memory[key]
            out.append(
                f"- {label}: **{m['bytes_per_code']:.0f} B**/code, {m['keys_per_code']:.2f} keys"
            )
    notes = [
        f"- {r['scenario']}/{r['log_level']}/{r['service']}: {'; '.join(r['anomalies'])}"
        for r in rows
        if r["anomalies"]
    ]
    if notes:
        out += ["", "⚠ anomalies in measured runs:", *notes]
    if any(r["noisy"] for r in rows):
        out += [
            "",
            "~ other processes used more than the allowed CPU in every attempt of at least one "
            "run: that row is less reliable.",
        ]
    return "\n".join(out)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
