"""The benchmarks' one percentile (``benchmarks/stats.py``): every p50 and p99 in
``benchmarks/results`` is computed by it, so its definition is pinned here."""

from __future__ import annotations

import math
import os
import random
from datetime import UTC, datetime

import pytest

from benchmarks.stats import cpu_idle_fraction, cpu_times, lag_summary, percentile, percentiles, run_machine

pytestmark = pytest.mark.unit


def test_nearest_rank_on_one_to_a_hundred() -> None:
    values = list(range(100, 0, -1))  # order does not matter
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile(values, 0.001) == 1


def test_always_a_measured_value_never_an_interpolation() -> None:
    values = [1.0, 10.0]
    assert percentile(values, 0.5) == 1.0
    assert percentile(values, 0.51) == 10.0


def test_p99_of_two_thousand_samples_is_the_1980th() -> None:
    rng = random.Random(7)
    values = [rng.random() for _ in range(2000)]
    assert percentile(values, 0.99) == sorted(values)[1979]
    # 20 samples lie above it: the slowest 1 %.
    assert sum(v > percentile(values, 0.99) for v in values) == 20


def test_empty_and_single() -> None:
    assert math.isnan(percentile([], 0.5))
    assert percentile([3.5], 0.99) == 3.5


def test_percentiles_match_percentile() -> None:
    rng = random.Random(11)
    values = [rng.expovariate(1.0) for _ in range(999)]
    assert percentiles(iter(values), 0.5, 0.9, 0.99) == [percentile(values, q) for q in (0.5, 0.9, 0.99)]


def test_lag_summary_is_the_p50_the_p99_and_the_max() -> None:
    rng = random.Random(3)
    values = [rng.uniform(1, 500) for _ in range(1500)]
    assert lag_summary(iter(values)) == {
        "p50": percentile(values, 0.5),
        "p99": percentile(values, 0.99),
        "max": max(values),
    }
    empty = lag_summary([])
    assert empty["max"] is None and math.isnan(empty["p50"] or 0.0) and math.isnan(empty["p99"] or 0.0)


def test_run_machine_records_when_where_and_the_load() -> None:
    started = datetime(2026, 12, 4, 23, 5, tzinfo=UTC)
    machine = run_machine(started, (0.5, 0.25, 1.234))
    assert machine["date"] == "2026-12-04 23:05 UTC"
    assert machine["loadavg_start"] == [0.5, 0.25, 1.23]  # two decimals, as the load prints
    assert len(machine["loadavg_end"]) == 3
    assert machine["cores"] == os.cpu_count()


def test_cpu_times_counts_idle_and_iowait_against_all_but_guest_time() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat = "cpu  100 5 50 800 20 3 2 10 40 1\ncpu0 50 2 25 400 10 1 1 5 20 0\n"
    assert cpu_times(stat) == (820, 990)


def test_cpu_idle_fraction_is_the_idle_share_of_the_jiffies_between_two_reads() -> None:
    reads = iter(
        [
            "cpu  100 0 50 800 20 0 0 0 0 0\n",
            "cpu  160 0 70 880 20 0 0 0 0 0\n",  # +80 busy, +80 idle (iowait unchanged)
        ]
    )
    assert cpu_idle_fraction(0, read=lambda: next(reads)) == 0.5
    unchanged = "cpu  1 0 1 1 0 0 0 0 0 0\n"
    assert cpu_idle_fraction(0, read=lambda: unchanged) == 0.0  # no jiffies passed: no division by 0
