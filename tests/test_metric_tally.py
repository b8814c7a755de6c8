"""Tallies add up to exactly what observing each value in turn would give."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from otpgate.observability import fast_tally
from otpgate.observability.fast_tally import (
    CounterTally,
    HistogramTally,
    counter_tally,
    histogram_tally,
)
from otpgate.observability.metrics import _FAST


def same_histogram(tallied: CollectorRegistry, direct: CollectorRegistry) -> None:
    """Bucket counts and count exactly; the sum to float rounding (added in another order)."""
    [got], [want] = list(tallied.collect()), list(direct.collect())
    exact = [(s.name, s.labels, s.value) for s in want.samples if not s.name.endswith("_sum")]
    assert [(s.name, s.labels, s.value) for s in got.samples if not s.name.endswith("_sum")] == (
        exact
    )
    [got_sum] = [s.value for s in got.samples if s.name.endswith("_sum")]
    [want_sum] = [s.value for s in want.samples if s.name.endswith("_sum")]
    assert got_sum == pytest.approx(want_sum, rel=1e-12)


def histograms() -> tuple[CollectorRegistry, Histogram, CollectorRegistry, Histogram]:
    direct_registry, tallied_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("t", "t", ["op"], buckets=_FAST, registry=direct_registry)
    tallied = Histogram("t", "t", ["op"], buckets=_FAST, registry=tallied_registry)
    return direct_registry, direct, tallied_registry, tallied


def test_histogram_batches_match_single_observations() -> None:
    direct_registry, direct, tallied_registry, tallied = histograms()
    rng = random.Random(7)
    # Every bound exactly (it belongs to its own bucket), below the first, above the last.
    values = [*_FAST, 0.0, 1e-9, 3.0, 100.0] + [rng.expovariate(200) for _ in range(500)]
    tally = HistogramTally(tallied.labels("a"))
    for value in values:
        direct.labels("a").observe(value)
        tally.observe(value)
    assert generate_latest(tallied_registry) != generate_latest(direct_registry)  # not yet
    tally.flush()
    same_histogram(tallied_registry, direct_registry)
    # A second batch adds to the first; an empty flush changes nothing.
    for value in values[:50]:
        direct.labels("a").observe(value)
        tally.observe(value)
    tally.flush()
    tally.flush()
    same_histogram(tallied_registry, direct_registry)


def test_counter_counts_reach_the_metric_on_flush() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["k"], registry=registry)
    tally = CounterTally(counter.labels("x"))
    for _ in range(5):
        tally.inc()
    assert registry.get_sample_value("c_total", {"k": "x"}) == 0
    tally.flush()
    tally.flush()
    assert registry.get_sample_value("c_total", {"k": "x"}) == 5


def test_one_tally_per_child() -> None:
    registry = CollectorRegistry()
    counter = Counter("shared", "s", ["k"], registry=registry)
    assert counter_tally(counter.labels("x")) is counter_tally(counter.labels("x"))
    assert counter_tally(counter.labels("x")) is not counter_tally(counter.labels("y"))
    _, _, _, tallied = histograms()
    assert histogram_tally(tallied.labels("a")) is histogram_tally(tallied.labels("a"))


async def test_flush_periodically_flushes_until_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = CollectorRegistry()
    counter = Counter("periodic", "p", registry=registry)
    tally = counter_tally(counter)
    tally.inc()
    flushed = asyncio.Event()
    real_flush = fast_tally.flush_all

    def flush_and_tell() -> None:
        real_flush()
        flushed.set()

    monkeypatch.setattr(fast_tally, "flush_all", flush_and_tell)
    task = asyncio.create_task(fast_tally.flush_periodically(0.01))
    await asyncio.wait_for(flushed.wait(), timeout=5)
    assert registry.get_sample_value("periodic_total") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
