"""The two load generators, run as child processes with the same output.

wrk (one thread, as in the Node service's own harness) drives the scenarios
whose requests are independent. The request -> code -> verify flow needs the
code back from the SNS stub, which a wrk script cannot fetch, so it is driven
by bench/flow_driver.py instead, identically for both services. Both print one
``BENCH_RESULT {json}`` line; their CPU time comes from wait4().
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import phones
from bench.services import BENCH_API_KEY, BENCH_V2_ACCOUNT, BENCH_V2_SERVICE, BENCH_V2_TOKEN

LUA_DIR = Path(__file__).resolve().parent / "lua"
MARK = "BENCH_RESULT "


@dataclass
class LoadResult:
    stats: dict[str, Any]  # requests, rps, p50_ms, p99_ms, statuses, socket_errors, ...
    cpu_s: float  # CPU time of the load generator itself


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit(
            "bench: wrk is not installed. On Debian/Ubuntu: sudo apt-get install -y wrk"
        )


def _run(argv: list[str], env: dict[str, str], limit_s: float) -> LoadResult:
    """Run to completion (killed past ``limit_s``), keep the result line and rusage."""
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(argv, env=env, stdout=out_file, stderr=err_file)
        # wait4 (not Popen.wait) reaps the child *and* tells its CPU time.
        deadline = time.monotonic() + limit_s
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.05)
        except BaseException:  # Ctrl-C or an error here: leave no load running
            proc.kill()
            os.wait4(proc.pid, 0)
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        err_file.seek(0)
        out = out_file.read().decode(errors="replace")
        err = err_file.read().decode(errors="replace")
    for line in out.splitlines():
        if line.startswith(MARK):
            return LoadResult(orjson.loads(line[len(MARK) :]), usage.ru_utime + usage.ru_stime)
    raise RuntimeError(
        f"{argv[0]} exited {proc.returncode} without a result line:\n{out[-2000:]}{err[-2000:]}"
    )


def run_wrk(
    url: str,
    script: str,
    duration_s: float,
    connections: int,
    *,
    count_status: bool = False,
) -> LoadResult:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "BENCH_LUA_DIR": str(LUA_DIR),
        "BENCH_AREA_CODES": phones.lua_area_codes(),
        "BENCH_COUNT_STATUS": "1" if count_status else "0",
        "BENCH_API_KEY": BENCH_API_KEY,
        "BENCH_V2_PATH": f"/v2/Services/{BENCH_V2_SERVICE}/VerificationCheck",
        "BENCH_V2_AUTH": "Basic "
        + base64.b64encode(f"{BENCH_V2_ACCOUNT}:{BENCH_V2_TOKEN}".encode()).decode(),
    }
    argv = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "5s",
        "-s", str(LUA_DIR / script), url,
    ]  # fmt: skip
    return _run(argv, env, duration_s + 30)


def run_flow(service_url: str, stub_url: str, duration_s: float, connections: int) -> LoadResult:
    argv = [
        sys.executable, "-m", "bench.flow_driver",
        "--url", service_url, "--stub", stub_url,
        "--duration", f"{duration_s:g}", "--connections", str(connections),
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "BENCH_API_KEY": BENCH_API_KEY,
    }
    return _run(argv, env, duration_s + 30)
