"""Per-process tallies of the request metrics, added to Prometheus in batches.

With several workers prometheus_client keeps each value in a memory-mapped
file: every update takes a lock, checks the process id and writes the file,
and a verify made six of them, ~9% of its CPU. Here a request only adds to
plain numbers; ``flush_all`` moves them into the real metrics once a second
(``flush_periodically``), before an in-process scrape and at shutdown. A scrape
of another worker's numbers may therefore be up to a second behind.

Everything runs on the worker's event loop thread, so nothing here is locked.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Any, TypeVar

FLUSH_INTERVAL_SECONDS = 1.0


class CounterTally:
    """Counts for one labelled Counter child."""

    __slots__ = ("_child", "_pending")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._pending = 0

    def inc(self) -> None:
        self._pending += 1

    def flush(self) -> None:
        pending = self._pending
        if pending:
            self._pending = 0
            self._child.inc(pending)


class HistogramTally:
    """Bucket counts and sum for one labelled Histogram child.

    ``flush`` adds whole batches to the child's bucket and sum values, which
    prometheus_client's public ``observe`` cannot do; tests pin the result to
    that of observing one value at a time.
    """

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)  # the last one is +Inf
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        # The first bucket whose upper bound is >= value, as Histogram.observe picks.
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        buckets = self._child._buckets
        for index, count in enumerate(counts):
            if count:
                buckets[index].inc(count)
                counts[index] = 0
        self._child._sum.inc(self._sum)
        self._sum = 0.0


Tally = CounterTally | HistogramTally
T = TypeVar("T", CounterTally, HistogramTally)

# One tally per labelled child, as prometheus_client keeps one child per label set.
_tallies: dict[object, Tally] = {}


def _tally(child: object, kind: type[T]) -> T:
    tally = _tallies.get(child)
    if tally is None:
        tally = _tallies[child] = kind(child)
    assert isinstance(tally, kind)
    return tally


def counter_tally(child: Any) -> CounterTally:
    return _tally(child, CounterTally)


def histogram_tally(child: Any) -> HistogramTally:
    return _tally(child, HistogramTally)


def flush_all() -> None:
    for tally in list(_tallies.values()):
        tally.flush()


async def flush_periodically(interval: float = FLUSH_INTERVAL_SECONDS) -> None:
    """Run for the worker's life; the caller cancels it and calls ``flush_all`` last."""
    while True:
        await asyncio.sleep(interval)
        flush_all()
