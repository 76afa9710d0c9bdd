"""Helpers shared by the benchmarks: medians over repeated timed runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_rate(fn: Callable[[], int], repeat: int) -> tuple[float, list[float]]:
    """Run ``fn`` (which returns how many operations it did) ``repeat`` times;
    return the median operations per second and every run's rate."""
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        rates.append(n / dt if dt > 0 else float("inf"))
    return statistics.median(rates), rates
