"""Alert de-duplication (pure) and its persistence in the state store."""

from __future__ import annotations

from pathlib import Path

from agents.alerts import AlertDeduper
from agents.state import StateStore


def test_one_alert_per_device_per_cooldown_by_event_time() -> None:
    d = AlertDeduper(60)
    assert d.allow("a", 1000.0)
    assert not d.allow("a", 1059.9)
    assert d.allow("b", 1001.0)  # other devices are independent
    assert d.allow("a", 1060.0)
    assert not d.allow("a", 1000.0)  # out-of-order older reading
    assert d.last_fired("a") == 1060.0
    assert d.last_fired("zzz") is None


def test_zero_cooldown_always_allows() -> None:
    d = AlertDeduper(0)
    assert d.allow("a", 1.0)
    assert d.allow("a", 1.0)


def test_changes_and_snapshot() -> None:
    d = AlertDeduper(10)
    d.load([("x", 5.0)])
    assert d.take_changes() == {}
    d.allow("y", 7.0)
    d.allow("x", 20.0)
    assert d.take_changes() == {"x": 20.0, "y": 7.0}
    assert d.take_changes() == {}
    assert d.snapshot() == {"x": 20.0, "y": 7.0}


def test_last_fired_times_survive_a_restart(tmp_path: Path) -> None:
    d = AlertDeduper(60)
    assert d.allow("dev-1", 1000.0)
    store = StateStore(tmp_path / "s")
    store.write({}, d.take_changes(), float("-inf"), {})
    store.close()

    store = StateStore(tmp_path / "s")
    try:
        d2 = AlertDeduper(60)
        d2.load(store.load_alerts().items())
    finally:
        store.close()
    assert not d2.allow("dev-1", 1030.0)
    assert d2.allow("dev-1", 1060.0)
