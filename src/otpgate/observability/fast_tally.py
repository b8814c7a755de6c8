"""Per-process tallies of the request metrics, added to Prometheus in batches.

With several workers prometheus_client keeps each value in a memory-mapped
file: every update takes a lock, checks the process id and writes the file,
and a verify made six of them, ~9% of its CPU. Here a request only adds to
plain numbers; ``flush_all`` moves them into the real metrics once a second
(``flush_periodically``), before an in-process scrape and at shutdown. A scrape
of another worker's numbers may therefore be up to a second behind.

Everything runs on the worker's event loop thread, so nothing here is locked.

With this fast path off (see otpgate/runtime/fast_path.py), ``counter`` and ``histogram``
hand out the metric children themselves: no tally is made, nothing waits for a
flush, and each request updates the metrics through their public ``inc`` and
``observe``. Tallies are kept per child for the whole process, so several apps in
one process (as in tests, which seldom run an app's lifespan) share them: a flush
from any of them moves every pending count once, and an app on the stock path
leaves nothing pending.
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_left
from typing import Any, Protocol, TypeVar

from otpgate.runtime.fast_path import unmentioned

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


def unavailable() -> str | None:
    """Why tallies cannot be flushed into the installed prometheus_client, or None.

    ``HistogramTally`` reads a child's bucket bounds and adds to its per-bucket
    values and its sum directly. Checked without counting anything anywhere: that
    ``Histogram.observe`` still works on those three fields and their ``inc``, and
    that a labelled Histogram in a private registry (a parent: it makes no child
    and no value) still keeps its bounds there. When values live in memory (not
    in the multi-process files, which any child would write to), a throwaway child
    also takes a flush and must show what observing each value would.
    """
    from prometheus_client import CollectorRegistry, Histogram, values

    missing = unmentioned(Histogram.observe, ("_upper_bounds", "_buckets", "_sum", "inc"))
    if missing:
        return f"Histogram.observe no longer uses {', '.join(missing)}"
    if not callable(getattr(values.ValueClass, "inc", None)):
        return "metric values have no inc()"
    name, bounds = "otpgate_tally_check", (0.5, 1.0)
    parent = Histogram(name, "check", ["x"], buckets=bounds, registry=CollectorRegistry())
    if getattr(parent, "_upper_bounds", None) != [*bounds, math.inf]:
        return "Histogram._upper_bounds is not its bucket bounds, +Inf last"
    if values.ValueClass is getattr(values, "MutexValue", None):
        registry = CollectorRegistry()
        tally = HistogramTally(Histogram(name, "check", buckets=bounds, registry=registry))
        for value in (0.25, 0.75, 2.0):
            tally.observe(value)
        tally.flush()
        counts = [registry.get_sample_value(f"{name}_bucket", {"le": le}) for le in ("0.5", "+Inf")]
        if counts != [1, 3] or registry.get_sample_value(f"{name}_sum") != 3.0:
            return "a flushed tally does not add up to the values observed"
    return None


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


class Counts(Protocol):
    """What a request counts into: a ``CounterTally``, or a Counter child itself."""

    def inc(self) -> None: ...


class Observes(Protocol):
    """What a request times into: a ``HistogramTally``, or a Histogram child itself."""

    def observe(self, value: float) -> None: ...


def counter(child: Any, *, tallied: bool) -> Counts:
    """``child``'s tally when requests are tallied; else ``child``, counted at once."""
    return counter_tally(child) if tallied else child


def histogram(child: Any, *, tallied: bool) -> Observes:
    """``child``'s tally when requests are tallied; else ``child``, observed at once."""
    return histogram_tally(child) if tallied else child


def flush_all() -> None:
    for tally in list(_tallies.values()):
        tally.flush()


async def flush_periodically(interval: float = FLUSH_INTERVAL_SECONDS) -> None:
    """Run for the worker's life; the caller cancels it and calls ``flush_all`` last."""
    while True:
        await asyncio.sleep(interval)
        flush_all()
