"""Alert de-duplication: at most one alert per device per cooldown, decided by event time.

Event time (the reading's ``ts``), not the wall clock, decides, so replaying old data from Kafka
fires the same alerts it fired live. The deduper is pure; the state store persists its
last-fired times (:meth:`AlertDeduper.take_changes` / :meth:`AlertDeduper.load`) so a restarted
worker does not alert again inside a cooldown.
"""

from __future__ import annotations

from collections.abc import Iterable


class AlertDeduper:
    """Decides whether a device may alert at event time ``ts``."""

    def __init__(self, cooldown_seconds: float) -> None:
        if cooldown_seconds < 0:
            raise ValueError("cooldown must be non-negative")
        self.cooldown = cooldown_seconds
        self._last: dict[str, float] = {}
        self._changed: set[str] = set()

    def allow(self, device: str, ts: float) -> bool:
        """True (and remember ``ts`` as the last alert) if ``device`` may alert at ``ts``.

        A device may alert when it never did, or when ``ts`` is at least one cooldown after its
        last alert. Readings older than the last alert (out of order) never alert again.
        """
        last = self._last.get(device)
        if last is not None and ts < last + self.cooldown:
            return False
        self._last[device] = ts
        self._changed.add(device)
        return True

    def last_fired(self, device: str) -> float | None:
        """Event time of the device's last alert, if any."""
        return self._last.get(device)

    def load(self, items: Iterable[tuple[str, float]]) -> None:
        """Restore last-fired times (from the state store); not marked as changes."""
        for device, ts in items:
            self._last[device] = ts

    def snapshot(self) -> dict[str, float]:
        """A copy of every last-fired time."""
        return dict(self._last)

    def take_changes(self) -> dict[str, float]:
        """Last-fired times changed since the previous call (to write to the state store)."""
        out = {d: self._last[d] for d in self._changed}
        self._changed.clear()
        return out
