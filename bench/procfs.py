"""CPU time and memory of process trees, read from /proc.

A service is measured as its whole tree (uvicorn's supervisor and every
worker; node and its threads), because that is what the machine pays for.
CPU% = (utime + stime) / wall time x 100, so 100 means one full core.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcStat:
    ppid: int
    ticks: int  # utime + stime of every thread
    start: int  # start time in ticks since boot: tells a reused PID apart


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ")".
    fields = raw[raw.rindex(b")") + 2 :].split()
    return ProcStat(
        ppid=int(fields[1]), ticks=int(fields[11]) + int(fields[12]), start=int(fields[19])
    )


def all_stats() -> dict[int, ProcStat]:
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                stats[int(name)] = stat
    return stats


def descendants(root: int, stats: dict[int, ProcStat] | None = None) -> set[int]:
    """``root`` and every process below it."""
    stats = all_stats() if stats is None else stats
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in stats and pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, ()))
    return tree


def ticks_of(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        stat = read_stat(pid)
        if stat is not None:
            total += stat.ticks
    return total


def rss_of(pids: set[int]) -> int:
    """Resident set size in bytes, summed over ``pids``."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat", "rb") as fh:
        values = [int(v) for v in fh.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


class RssPeak:
    """Samples the summed RSS of a few process trees in a background thread.

    The peak of the sum is what the machine must hold; per-process high-water
    marks (VmHWM) would add peaks that never coincide and carry over from
    earlier scenarios.
    """

    def __init__(self, trees: dict[str, set[int]], interval: float = 0.2) -> None:
        self._trees = trees
        self._interval = interval
        self.peak = dict.fromkeys(trees, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        for name, pids in self._trees.items():
            self.peak[name] = max(self.peak[name], rss_of(pids))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> RssPeak:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
