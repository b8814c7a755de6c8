"""How busy the machine is apart from us, before and during a measured run.

The machine has 2 cores and may be shared, so a run made while something else
burns CPU says little. Before each run we wait (bounded) for the machine to be
quiet; during it we add up the CPU time of every process that is not ours
(ours = this harness and everything it started), and report it as "other CPU%".
"""

from __future__ import annotations

import os
import sys
import time

from bench import procfs


def busy_pct(interval: float = 1.0) -> float:
    """Whole-machine busy % over ``interval`` (100 per core, like every CPU% here)."""
    busy0, total0 = procfs.machine_ticks()
    time.sleep(interval)
    busy1, total1 = procfs.machine_ticks()
    cores = os.cpu_count() or 1
    return 100.0 * cores * (busy1 - busy0) / max(1, total1 - total0)


def wait_quiet(max_busy_pct: float, max_wait_s: float) -> float:
    """Wait until the machine is at most ``max_busy_pct`` busy; return the last reading."""
    deadline = time.monotonic() + max_wait_s
    announced = False
    while True:
        busy = busy_pct()
        if busy <= max_busy_pct:
            if announced:
                print(f"  machine quiet again ({busy:.0f}%)", file=sys.stderr)
            return busy
        if time.monotonic() >= deadline:
            print(
                f"  WARNING: machine still {busy:.0f}% busy after {max_wait_s:.0f}s; "
                "measuring anyway (see 'other CPU%')",
                file=sys.stderr,
            )
            return busy
        if not announced:
            print(
                f"  machine {busy:.0f}% busy while our services idle: "
                f"waiting up to {max_wait_s:.0f}s",
                file=sys.stderr,
            )
            announced = True


class OtherCpu:
    """CPU time used by processes outside our own tree between start() and stop()."""

    def start(self) -> None:
        self._before = procfs.all_stats()
        self._t0 = time.monotonic()

    def stop(self) -> float:
        """Other processes' CPU% over the interval."""
        after = procfs.all_stats()
        wall = time.monotonic() - self._t0
        ours = procfs.descendants(os.getpid(), after) | procfs.descendants(
            os.getpid(), self._before
        )
        ticks = 0
        for pid, stat in after.items():
            if pid in ours:
                continue
            old = self._before.get(pid)
            # A process born during the run (or a reused PID) counts from zero.
            base = old.ticks if old is not None and old.start == stat.start else 0
            ticks += max(0, stat.ticks - base)
        return 100.0 * ticks / procfs.CLK_TCK / max(wall, 1e-9)
