"""Small statistics of the benchmarks: medians over repeated runs, percentiles of latencies."""

from __future__ import annotations

import statistics
from typing import Any


def medians(runs: list[dict[str, Any]], keys: list[str]) -> dict[str, float]:
    """The median of each numeric figure in ``keys`` over the runs that have it (3 decimals)."""
    out: dict[str, float] = {}
    for key in keys:
        vals = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if vals:
            out[key] = round(statistics.median(vals), 3)
    return out


def percentile(sorted_vals: list[int], q: float) -> float:
    """The ``q`` quantile (0..1, nearest index) of ``sorted_vals`` in ns, as ms; NaN if empty."""
    if not sorted_vals:
        return float("nan")
    idx = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[idx] / 1e6
