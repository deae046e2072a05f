"""Summaries over repeated benchmark runs."""

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
