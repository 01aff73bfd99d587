"""What the benchmarks' results share: one percentile, so a p99 here means what a p99 there
means, and the record of where and when a run ran.

Nearest rank: the smallest sample with at least ``q`` of the samples at or below it. No
interpolation, so every figure is a time that was measured. The benchmarks used three
definitions before (index ``int(n·q)``, nearest rank, and :func:`statistics.quantiles`'
interpolation); on the sample sizes they take (2,000 to 600,000) the three differ by less
than the gap between two neighbouring samples.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (``0 < q <= 1``) of ``values``; NaN when there are none."""
    return _rank(sorted(values), q)


def percentiles(values: Iterable[float], *qs: float) -> list[float]:
    """:func:`percentile` for several ``qs`` with one sort."""
    ordered = sorted(values)
    return [_rank(ordered, q) for q in qs]


def lag_summary(values: Iterable[float]) -> dict[str, float | None]:
    """The ``{"p50", "p99", "max"}`` every lag in the results is reported as (``max`` None, the
    percentiles NaN, when there are no samples)."""
    ordered = sorted(values)
    return {
        "p50": _rank(ordered, 0.5),
        "p99": _rank(ordered, 0.99),
        "max": ordered[-1] if ordered else None,
    }


def _rank(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run_machine(started: datetime, load_start: tuple[float, float, float]) -> dict[str, Any]:
    """The ``machine`` of a results file: a ratio means little without the load it ran under."""
    return {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cores": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_times(stat: str) -> tuple[int, int]:
    """(idle, total) jiffies from /proc/stat's text: idle and iowait, and every field but the
    guest ones (already counted in user and nice)."""
    fields = [int(x) for x in stat.split("\n", 1)[0].split()[1:9]]
    return fields[3] + fields[4], sum(fields)


def cpu_idle_fraction(seconds: float = 1.0, read: Callable[[], str] = Path("/proc/stat").read_text) -> float:
    """The share of the machine's CPU time that was idle over the next ``seconds`` (``read``
    gives /proc/stat's text)."""
    idle0, total0 = cpu_times(read())
    time.sleep(seconds)
    idle1, total1 = cpu_times(read())
    return (idle1 - idle0) / max(1, total1 - total0)
