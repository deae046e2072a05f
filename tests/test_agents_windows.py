"""Tumbling-window maths (pure)."""

from __future__ import annotations

import pytest

from agents.windows import TumblingAggregator, WindowStats, window_bounds


def test_window_bounds_aligned_to_epoch() -> None:
    assert window_bounds(0.0, 10) == (0.0, 10.0)
    assert window_bounds(9.999, 10) == (0.0, 10.0)
    assert window_bounds(10.0, 10) == (10.0, 20.0)
    assert window_bounds(1_700_000_003.5, 10) == (1_700_000_000.0, 1_700_000_010.0)
    assert window_bounds(-0.5, 10) == (-10.0, 0.0)
    with pytest.raises(ValueError):
        window_bounds(1.0, 0)


def test_fold_and_close_with_grace() -> None:
    agg = TumblingAggregator(10, 2)
    for ts, v in [(100.0, 20.0), (105.0, 22.0), (109.9, 27.0)]:
        assert agg.add("d1", ts, v)
    assert agg.add("d2", 101.0, 5.0)
    assert agg.add("d1", 111.0, 30.0)  # next window
    assert agg.close(111.9) == []  # end 110 + grace 2 > 111.9
    closed = agg.close(112.0)
    assert [(c.device, c.start, c.end) for c in closed] == [
        ("d1", 100.0, 110.0),
        ("d2", 100.0, 110.0),
    ]
    d1 = closed[0]
    assert (d1.count, d1.minimum, d1.maximum) == (3, 20.0, 27.0)
    assert d1.mean == pytest.approx(23.0)
    assert d1.as_json() == {
        "device": "d1",
        "window_start": 100.0,
        "window_end": 110.0,
        "count": 3,
        "mean": d1.mean,
        "min": 20.0,
        "max": 27.0,
    }
    assert list(agg.open_windows()) == [("d1", 110.0)]


def test_late_events_are_refused_and_watermark_never_goes_back() -> None:
    agg = TumblingAggregator(10, 2)
    agg.add("d", 100.0, 1.0)
    assert len(agg.close(112.0)) == 1
    assert agg.is_late(105.0)
    assert not agg.add("d", 105.0, 1.0)
    agg.close(50.0)
    assert agg.watermark == 112.0
    # 110..120 is still open: end 120 + 2 > 112.
    assert agg.add("d", 110.0, 1.0)
    assert agg.open_windows() == {("d", 110.0): WindowStats(1, 1.0, 1.0, 1.0)}


def test_take_changes_reports_updates_and_closes() -> None:
    agg = TumblingAggregator(10, 0)
    agg.add("d", 1.0, 3.0)
    agg.add("d", 2.0, 5.0)
    assert agg.take_changes() == {("d", 0.0): WindowStats(2, 8.0, 3.0, 5.0)}
    assert agg.take_changes() == {}
    agg.close(10.0)
    assert agg.take_changes() == {("d", 0.0): None}


def test_restore_and_stats_roundtrip() -> None:
    st = WindowStats.first(2.0)
    st.add(4.0)
    assert WindowStats.from_list(st.to_list()) == st
    agg = TumblingAggregator(10, 0)
    agg.restore(("d", 0.0), st)
    assert agg.take_changes() == {}
    (closed,) = agg.close(10.0)
    assert (closed.count, closed.mean) == (2, 3.0)
