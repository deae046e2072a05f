"""Tumbling-window maths for the demo pipeline: pure functions and a pure aggregator.

Nothing here does I/O or reads a clock: the caller passes event timestamps and a watermark in,
and gets closed windows out ("list in, list out"), so the rules are testable without a broker.

Windows are aligned to the epoch (``start = floor(ts / size) * size``), so every device shares
the same boundaries; the aggregator groups open windows by start, which makes the close check
cost O(windows closed), not O(open windows).

A window ``[start, end)`` closes when ``end + grace <= watermark``. An event whose window has
already closed (its ``end + grace`` is at or below the highest watermark ever passed to
:meth:`TumblingAggregator.close`) is *late*: it is dropped and reported, never reopening a window
whose result was already published.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def window_bounds(ts: float, size: float) -> tuple[float, float]:
    """The tumbling window ``[start, end)`` of width ``size`` that holds event time ``ts``."""
    if size <= 0:
        raise ValueError("window size must be positive")
    start = math.floor(ts / size) * size
    return start, start + size


@dataclass(slots=True)
class WindowStats:
    """Running statistics of one (device, window): enough to give count, mean, min and max."""

    count: int
    total: float
    minimum: float
    maximum: float

    @classmethod
    def first(cls, value: float) -> WindowStats:
        """Statistics holding a single value."""
        return cls(1, value, value, value)

    def add(self, value: float) -> None:
        """Fold one more value in."""
        self.count += 1
        self.total += value
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value

    def to_list(self) -> list[float]:
        """A compact, JSON-friendly form for the state store."""
        return [self.count, self.total, self.minimum, self.maximum]

    @classmethod
    def from_list(cls, raw: list[float]) -> WindowStats:
        """The inverse of :meth:`to_list`."""
        return cls(int(raw[0]), float(raw[1]), float(raw[2]), float(raw[3]))


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """The result of one (device, window) once it closed."""

    device: str
    start: float
    end: float
    count: int
    mean: float
    minimum: float
    maximum: float

    def as_json(self) -> dict[str, object]:
        """The demo contract's stats payload."""
        return {
            "device": self.device,
            "window_start": self.start,
            "window_end": self.end,
            "count": self.count,
            "mean": self.mean,
            "min": self.minimum,
            "max": self.maximum,
        }


WindowKey = tuple[str, float]


class TumblingAggregator:
    """Per-(device, window_start) statistics over tumbling windows, closed by a watermark.

    It also records which keys changed since the last :meth:`take_changes`, so the caller can
    write only those to the state store once per batch.
    """

    def __init__(self, size: float, grace: float) -> None:
        if size <= 0 or grace < 0:
            raise ValueError("size must be positive and grace non-negative")
        self.size = size
        self.grace = grace
        # Highest watermark ever passed to close(); windows with end + grace <= it are closed.
        self.watermark = -math.inf
        self._open: dict[float, dict[str, WindowStats]] = {}
        self._changed: set[WindowKey] = set()

    def is_late(self, ts: float) -> bool:
        """Whether the window of ``ts`` has already closed."""
        _, end = window_bounds(ts, self.size)
        return end + self.grace <= self.watermark

    def add(self, device: str, ts: float, value: float) -> bool:
        """Fold a reading in; return False (and change nothing) when it is late."""
        start, end = window_bounds(ts, self.size)
        if end + self.grace <= self.watermark:
            return False
        per_device = self._open.get(start)
        if per_device is None:
            per_device = self._open[start] = {}
        stats = per_device.get(device)
        if stats is None:
            per_device[device] = WindowStats.first(value)
        else:
            stats.add(value)
        self._changed.add((device, start))
        return True

    def close(self, watermark: float) -> list[ClosedWindow]:
        """Advance the watermark and return every window with ``end + grace <= watermark``.

        Results come out ordered by window start, then device. The watermark never goes back.
        """
        if watermark > self.watermark:
            self.watermark = watermark
        closed: list[ClosedWindow] = []
        limit = self.watermark - self.grace - self.size  # start + size + grace <= wm
        ready = [s for s in self._open if s <= limit]
        for start in sorted(ready):
            per_device = self._open.pop(start)
            for device in sorted(per_device):
                st = per_device[device]
                closed.append(
                    ClosedWindow(
                        device=device,
                        start=start,
                        end=start + self.size,
                        count=st.count,
                        mean=st.total / st.count,
                        minimum=st.minimum,
                        maximum=st.maximum,
                    )
                )
                self._changed.add((device, start))
        return closed

    def open_windows(self) -> dict[WindowKey, WindowStats]:
        """A copy of every open window (for inspection and tests)."""
        return {(d, s): st for s, per in self._open.items() for d, st in per.items()}

    def get(self, key: WindowKey) -> WindowStats | None:
        """The open window ``key``, or None when it is closed or unknown."""
        device, start = key
        return self._open.get(start, {}).get(device)

    def restore(self, key: WindowKey, stats: WindowStats) -> None:
        """Put back an open window loaded from the state store (not marked as a change)."""
        device, start = key
        self._open.setdefault(start, {})[device] = stats

    def take_changes(self) -> dict[WindowKey, WindowStats | None]:
        """Keys changed since the last call: their stats, or None when the window closed."""
        out = {key: self.get(key) for key in self._changed}
        self._changed.clear()
        return out
