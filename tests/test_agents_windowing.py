"""Windowed aggregations (pure): tumbling, hopping and session windows, grace, state."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from agents.reducers import Count, Last, Max, Mean, Min, Percentile, ReducerLike, Sum
from agents.windowing import (
    Hopping,
    Session,
    Tumbling,
    WindowedAggregator,
    WindowResult,
    WindowSpec,
    windows_of,
)

Event = tuple[str, float, float]  # key, ts, value


def bounds(results: list[WindowResult]) -> list[tuple[str, float, float, int]]:
    return [(r.key, r.start, r.end, r.count) for r in results]


@pytest.mark.parametrize(
    ("spec", "ts", "expected"),
    [
        (Tumbling(10), 0.0, [(0.0, 10.0)]),
        (Tumbling(10), 9.999, [(0.0, 10.0)]),
        (Tumbling(10), 10.0, [(10.0, 20.0)]),
        (Tumbling(10), -0.5, [(-10.0, 0.0)]),
        (Tumbling(0.1), 0.3, [(0.2, 0.30000000000000004)]),
        (Tumbling(60), 1_700_000_003.5, [(1_699_999_980.0, 1_700_000_040.0)]),
        (Hopping(10, 5), 12.0, [(5.0, 15.0), (10.0, 20.0)]),
        (Hopping(10, 5), 10.0, [(5.0, 15.0), (10.0, 20.0)]),
        (Hopping(10, 5), 14.999, [(5.0, 15.0), (10.0, 20.0)]),
        (Hopping(10, 2.5), 10.0, [(2.5, 12.5), (5.0, 15.0), (7.5, 17.5), (10.0, 20.0)]),
        (Hopping(10, 3), 10.0, [(3.0, 13.0), (6.0, 16.0), (9.0, 19.0)]),
        (Hopping(10, 10), 10.0, [(10.0, 20.0)]),
        (Hopping(10, 5), -1.0, [(-10.0, 0.0), (-5.0, 5.0)]),
    ],
)
def test_windows_of(
    spec: Tumbling | Hopping, ts: float, expected: list[tuple[float, float]]
) -> None:
    got = windows_of(spec, ts)
    assert got == expected
    assert all(start <= ts < end for start, end in got)


def test_tumbling_windows_partition_the_line_despite_float_steps() -> None:
    spec = Tumbling(0.1)
    for i in range(1000):
        ts = i / 1000
        ((start, end),) = windows_of(spec, ts)
        assert start <= ts < end


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Tumbling(0), "size"),
        (lambda: Tumbling(10, grace=-1), "grace"),
        (lambda: Tumbling(math.inf), "size"),
        (lambda: Hopping(10, 0), "step"),
        (lambda: Hopping(10, 11), "step must not exceed"),
        (lambda: Session(0), "gap"),
        (lambda: Session(5, grace=math.nan), "grace"),
    ],
)
def test_invalid_specs(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_tumbling_results_in_end_then_key_order_with_reducers() -> None:
    agg = WindowedAggregator(
        Tumbling(10, grace=2),
        {"n": Count(), "sum": Sum(), "mean": Mean(), "min": Min(), "max": Max(), "last": Last()},
    )
    events: list[Event] = [
        ("b", 100.0, 5.0),
        ("a", 105.0, 22.0),
        ("a", 100.0, 20.0),
        ("a", 109.9, 27.0),
        ("a", 111.0, 30.0),
        ("c", 95.0, 1.0),
    ]
    for key, ts, value in events:
        assert agg.add(key, ts, value)
    results = agg.close(112.0)
    assert bounds(results) == [
        ("c", 90.0, 100.0, 1),
        ("a", 100.0, 110.0, 3),
        ("b", 100.0, 110.0, 1),
    ]
    a = results[1]
    assert a.values == {"n": 3, "sum": 69.0, "mean": 23.0, "min": 20.0, "max": 27.0, "last": 27.0}
    assert a.id == "a|100.0|110.0"
    assert a.as_dict() == {
        "id": "a|100.0|110.0",
        "key": "a",
        "start": 100.0,
        "end": 110.0,
        "count": 3,
        "values": a.values,
    }
    assert agg.open_windows() == [("a", 110.0, 120.0)]


@pytest.mark.parametrize(
    ("spec", "watermark", "closes"),
    [
        (Tumbling(10, grace=2), 111.999, False),
        (Tumbling(10, grace=2), 112.0, True),  # exactly end + grace
        (Tumbling(10), 110.0, True),
        (Tumbling(10), 109.999, False),
        (Hopping(10, 10, grace=5), 115.0, True),
        (Hopping(10, 10, grace=5), 114.9, False),
        (Session(10, grace=3), 113.0, True),  # session [100, 110)
        (Session(10, grace=3), 112.9, False),
    ],
)
def test_grace_boundary(spec: WindowSpec, watermark: float, closes: bool) -> None:
    agg = WindowedAggregator(spec, {"n": Count()})
    assert agg.add("k", 100.0, 1.0)
    assert bool(agg.close(watermark)) is closes
    # An event for the same window is late exactly when the window closed.
    assert agg.add("k", 100.0, 1.0) is not closes
    assert agg.late == int(closes)


def test_late_events_are_dropped_counted_and_never_reopen_a_window() -> None:
    agg = WindowedAggregator(Tumbling(10, grace=2), {"n": Count()})
    agg.add("d", 100.0, 1.0)
    assert len(agg.close(112.0)) == 1
    assert not agg.add("d", 105.0, 1.0)
    assert not agg.add("other", 101.0, 1.0)
    assert agg.late == 2
    agg.close(50.0)  # the watermark never goes back
    assert agg.watermark == 112.0
    assert not agg.add("d", 105.0, 1.0)
    assert agg.add("d", 110.0, 1.0)  # [110, 120) is open: 120 + 2 > 112
    assert agg.late == 3
    assert bounds(agg.close(math.inf)) == [("d", 110.0, 120.0, 1)]


@pytest.mark.parametrize(
    ("ts_values", "expected"),
    [
        # size 10, step 5: every event is in two windows.
        (
            [0.0, 4.0, 5.0, 12.0],
            [(-5.0, 5.0, 2), (0.0, 10.0, 3), (5.0, 15.0, 2), (10.0, 20.0, 1)],
        ),
        ([7.0], [(0.0, 10.0, 1), (5.0, 15.0, 1)]),
        ([10.0, 10.0, 10.0], [(5.0, 15.0, 3), (10.0, 20.0, 3)]),
    ],
)
def test_hopping_overlap_counts(
    ts_values: list[float], expected: list[tuple[float, float, int]]
) -> None:
    agg = WindowedAggregator(Hopping(10, 5), {"n": Count(), "sum": Sum()})
    for ts in ts_values:
        assert agg.add("k", ts, 1.0)
    results = agg.close(math.inf)
    assert [(r.start, r.end, r.count) for r in results] == expected
    assert all(r.values == {"n": r.count, "sum": float(r.count)} for r in results)


def test_hopping_event_with_some_windows_closed_goes_to_the_open_ones() -> None:
    agg = WindowedAggregator(Hopping(10, 5), {"n": Count()})
    agg.add("k", 1.0, 1.0)
    assert bounds(agg.close(10.0)) == [("k", -5.0, 5.0, 1), ("k", 0.0, 10.0, 1)]
    # 12 is in [5, 15) and [10, 20): both open. 8 is in [0, 10) (closed) and [5, 15) (open).
    assert agg.add("k", 8.0, 1.0)
    assert agg.late == 0
    assert not agg.add("k", 4.0, 1.0)  # [-5, 5) and [0, 10): both closed
    assert agg.late == 1
    assert bounds(agg.close(math.inf)) == [("k", 5.0, 15.0, 1)]


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # One session: gaps below 10.
        ([100.0, 105.0, 114.0], [(100.0, 124.0, 3)]),
        # A gap of exactly 10 starts a new session ([ts, ts + gap) spans only touch).
        ([100.0, 110.0], [(100.0, 110.0, 1), (110.0, 120.0, 1)]),
        ([100.0, 109.999], [(100.0, 119.999, 2)]),
        # Out of order, within the session: extends it backwards.
        ([100.0, 95.0], [(95.0, 110.0, 2)]),
        # Two sessions, then an event that bridges them: one session.
        ([100.0, 115.0, 108.0], [(100.0, 125.0, 3)]),
        # Three sessions, one event bridges the last two only.
        ([100.0, 120.0, 135.0, 128.0], [(100.0, 110.0, 1), (120.0, 145.0, 3)]),
        # Not quite bridging: 111 is 11 after 100.
        ([100.0, 120.0, 111.0], [(100.0, 110.0, 1), (111.0, 130.0, 2)]),
        # An event bridging two sessions, its own span inside neither (97 spans [97, 107)).
        ([90.0, 104.0, 97.0], [(90.0, 114.0, 3)]),
    ],
)
def test_sessions_and_merges(events: list[float], expected: list[tuple[float, float, int]]) -> None:
    agg = WindowedAggregator(Session(10), {"n": Count(), "first_to_last": Last()})
    for ts in events:
        assert agg.add("k", ts, ts)
    results = agg.close(math.inf)
    assert [(r.start, r.end, r.count) for r in results] == expected
    assert all(r.values["n"] == r.count for r in results)


def test_session_merge_by_a_late_event_within_grace_merges_every_reducer() -> None:
    reducers: dict[str, ReducerLike] = {
        "n": Count(),
        "mean": Mean(),
        "min": Min(),
        "max": Max(),
        "last": Last(),
        "p50": Percentile(50),
        "values": list,
    }
    agg = WindowedAggregator(Session(10, grace=10), reducers)
    agg.add("k", 100.0, 1.0)  # session [100, 110)
    agg.add("k", 115.0, 5.0)  # session [115, 125)
    agg.add("other", 100.0, 7.0)
    assert bounds(agg.close(119.0)) == []  # 110 + 10 > 119: the first one is still in grace
    assert agg.add("k", 108.0, 3.0)  # late but within grace: bridges both
    assert agg.open_windows() == [("k", 100.0, 125.0), ("other", 100.0, 110.0)]
    (other,) = agg.close(120.0)
    assert other.key == "other"
    (k,) = agg.close(135.0)
    assert (k.start, k.end, k.count) == (100.0, 125.0, 3)
    assert k.values == {
        "n": 3,
        "mean": 3.0,
        "min": 1.0,
        "max": 5.0,
        "last": 3.0,
        "p50": 3.0,
        "values": [1.0, 5.0, 3.0],
    }


def test_session_event_inside_a_published_session_is_late() -> None:
    agg = WindowedAggregator(Session(10, grace=0), {"n": Count()})
    agg.add("k", 100.0, 1.0)
    agg.add("k", 110.0 - 1, 1.0)  # session [100, 119)
    assert bounds(agg.close(119.0)) == [("k", 100.0, 119.0, 2)]
    # 115 spans [115, 125): not closed by itself, but it belongs to the published session.
    assert not agg.add("k", 115.0, 1.0)
    assert not agg.add("k", 90.0, 1.0)  # [90, 100) closed long ago
    assert agg.add("k", 119.0, 1.0)  # after the published session: a new one
    assert agg.add("other", 115.0, 1.0)  # other keys are independent
    assert agg.late == 2
    # Once the watermark passes closed end + gap + grace, the per-key memory is dropped.
    assert bounds(agg.close(128.9)) == [("other", 115.0, 125.0, 1)]
    assert agg.snapshot()["keys"]["k"]["closed_end"] == 119.0
    assert bounds(agg.close(129.0)) == [("k", 119.0, 129.0, 1)]
    assert agg.snapshot()["keys"] == {
        "k": {"windows": [], "closed_end": 129.0},
        "other": {"windows": [], "closed_end": 125.0},
    }
    agg.close(138.9)
    assert list(agg.snapshot()["keys"]) == ["k"]
    agg.close(139.0)
    assert agg.snapshot()["keys"] == {}


class Range:
    """A custom reducer without ``merge``."""

    def init(self) -> list[float] | None:
        return None

    def add(self, state: list[float] | None, value: float) -> list[float] | None:
        return [value, value] if state is None else [min(state[0], value), max(state[1], value)]

    def result(self, state: list[float] | None) -> float | None:
        return None if state is None else state[1] - state[0]


@pytest.mark.parametrize("spec", [Tumbling(100), Session(30)])
def test_custom_reducer_without_merge_works_in_every_window_kind(spec: WindowSpec) -> None:
    agg = WindowedAggregator(spec, {"range": Range(), "spread": lambda v: max(v) - min(v)})
    for ts, value in [(0.0, 5.0), (40.0, 1.0), (20.0, 9.0)]:  # 20 bridges two sessions
        agg.add("k", ts, value)
    (r,) = agg.close(math.inf)
    assert r.values == {"range": 8.0, "spread": 8.0}


def run(
    agg: WindowedAggregator, steps: list[tuple[str, Any]]
) -> tuple[list[dict[str, Any]], list[bool]]:
    results: list[dict[str, Any]] = []
    accepted: list[bool] = []
    for op, arg in steps:
        if op == "add":
            accepted.append(agg.add(*arg))
        else:
            results.extend(r.as_dict() for r in agg.close(arg))
    return results, accepted


def random_steps(seed: int, n: int) -> list[tuple[str, Any]]:
    rng = random.Random(seed)
    steps: list[tuple[str, Any]] = []
    t = 1000.0
    for i in range(n):
        t += rng.uniform(0, 3)
        key = f"d{rng.randrange(5)}"
        ts = t - rng.uniform(0, 25)  # out of order, some late
        steps.append(("add", (key, round(ts, 3), round(rng.uniform(-10, 40), 2))))
        if i % 7 == 6:
            steps.append(("close", t - 5))
    steps.append(("close", math.inf))
    return steps


REDUCERS: dict[str, ReducerLike] = {
    "n": Count(),
    "sum": Sum(),
    "mean": Mean(),
    "min": Min(),
    "max": Max(),
    "last": Last(),
    "p90": Percentile(90),
    "range": Range(),
}


@pytest.mark.parametrize(
    "spec", [Tumbling(10, grace=3), Hopping(20, 5, grace=2), Session(4, grace=5)]
)
@pytest.mark.parametrize("via", ["snapshot", "changes"])
def test_restore_round_trip_gives_identical_results(spec: WindowSpec, via: str) -> None:
    steps = random_steps(seed=7, n=300)
    expected, expected_accepted = run(WindowedAggregator(spec, REDUCERS), steps)
    assert len(expected) > 10
    assert isinstance(spec, Hopping) or not all(expected_accepted)  # some late events

    for cut in (1, 50, 151, len(steps) - 1):
        first = WindowedAggregator(spec, REDUCERS)
        store: dict[str, Any] = {}  # a key-value store fed by changes(), like RocksDB
        results, accepted = run(first, steps[:cut])
        if via == "snapshot":
            saved = json.loads(json.dumps(first.snapshot(), allow_nan=False))
        else:
            for key, state in first.changes().items():
                if state is None:
                    store.pop(key, None)
                else:
                    store[key] = json.dumps(state, allow_nan=False)
            saved = {
                "watermark": first.snapshot()["watermark"],
                "late": first.late,
                "keys": {k: json.loads(v) for k, v in store.items()},
            }
        second = WindowedAggregator(spec, REDUCERS)
        second.restore(saved)
        assert second.snapshot() == first.snapshot()
        more, more_accepted = run(second, steps[cut:])
        assert results + more == expected
        assert accepted + more_accepted == expected_accepted


def test_changes_reports_touched_keys_once() -> None:
    agg = WindowedAggregator(Tumbling(10), {"mean": Mean()})
    assert agg.changes() == {}
    agg.add("a", 1.0, 2.0)
    agg.add("b", 1.0, 4.0)
    agg.add("b", 12.0, 6.0)
    changes = agg.changes()
    assert list(changes) == ["a", "b"]
    assert changes["a"] == {
        "windows": [
            {"start": 0.0, "end": 10.0, "count": 1, "values": None, "state": {"mean": [2.0, 1]}}
        ]
    }
    assert agg.changes() == {}
    agg.close(10.0)
    assert agg.changes() == {
        "a": None,
        "b": {
            "windows": [
                {
                    "start": 10.0,
                    "end": 20.0,
                    "count": 1,
                    "values": None,
                    "state": {"mean": [6.0, 1]},
                }
            ]
        },
    }
    assert not agg.add("a", 5.0, 1.0)
    assert agg.changes() == {}  # a late event changes nothing


def test_snapshot_is_a_copy_and_strict_json() -> None:
    agg = WindowedAggregator(Tumbling(10), {"mean": Mean(), "p50": Percentile(50)})
    agg.add("a", 1.0, 2.0)
    snap = agg.snapshot()
    agg.add("a", 2.0, 4.0)
    assert snap["keys"]["a"]["windows"][0]["values"] == [2.0]
    assert snap["keys"]["a"]["windows"][0]["state"] == {"mean": [2.0, 1]}
    assert snap["watermark"] == "-inf"
    agg.close(math.inf)
    assert agg.snapshot()["watermark"] == "inf"
    json.dumps(agg.snapshot(), allow_nan=False)
    fresh = WindowedAggregator(Tumbling(10), {"mean": Mean(), "p50": Percentile(50)})
    fresh.restore(agg.snapshot())
    assert fresh.watermark == math.inf
    assert not fresh.add("a", 1e12, 1.0)


@pytest.mark.parametrize(
    ("spec", "reducers", "message"),
    [
        (Tumbling(20), {"mean": Mean()}, "snapshot is for"),
        (Tumbling(10), {"avg": Mean()}, "reducers"),
        (Session(10), {"mean": Mean()}, "snapshot is for"),
    ],
)
def test_restore_refuses_another_configuration(
    spec: WindowSpec, reducers: dict[str, ReducerLike], message: str
) -> None:
    agg = WindowedAggregator(Tumbling(10), {"mean": Mean()})
    agg.add("a", 1.0, 1.0)
    other = WindowedAggregator(spec, reducers)
    with pytest.raises(ValueError, match=message):
        other.restore(agg.snapshot())


def test_current_peeks_without_closing_and_non_finite_time_is_refused() -> None:
    agg = WindowedAggregator(Hopping(10, 5), {"n": Count()})
    agg.add("a", 7.0, 1.0)
    assert [(r.start, r.values) for r in agg.current("a")] == [(0.0, {"n": 1}), (5.0, {"n": 1})]
    assert agg.current("nobody") == []
    assert len(agg.open_windows()) == 2
    with pytest.raises(ValueError):
        agg.add("a", math.nan, 1.0)


def test_ids_are_stable_for_int_and_float_inputs() -> None:
    a = WindowedAggregator(Tumbling(60), {"n": Count()})
    b = WindowedAggregator(Tumbling(60.0), {"n": Count()})
    a.add("dev", 130, 1.0)
    b.add("dev", 130.0, 1.0)
    assert [r.id for r in a.close(1000)] == [r.id for r in b.close(1000.0)] == ["dev|120.0|180.0"]


@pytest.mark.parametrize("seed", range(5))
def test_sessions_in_any_arrival_order_match_a_brute_force_grouping(seed: int) -> None:
    rng = random.Random(seed)
    times = [round(rng.uniform(0, 200), 1) for _ in range(60)]
    gap = 6.0
    ordered = sorted(times)
    expected: list[tuple[float, float, int]] = []
    maxima: list[float] = []
    for ts in ordered:
        if expected and ts < expected[-1][1]:
            start, _, n = expected[-1]
            expected[-1] = (start, ts + gap, n + 1)
            maxima[-1] = ts
        else:
            expected.append((ts, ts + gap, 1))
            maxima.append(ts)
    agg = WindowedAggregator(Session(gap), {"n": Count(), "max": Max()})
    for ts in times:  # random arrival order, nothing closes before the end
        assert agg.add("k", ts, ts)
    results = agg.close(math.inf)
    assert [(r.start, r.end, r.count) for r in results] == expected
    assert [r.values["max"] for r in results] == maxima


@pytest.mark.parametrize(("size", "step"), [(10.0, 5.0), (10.0, 2.5), (9.0, 3.0), (4.0, 4.0)])
def test_hopping_counts_match_a_brute_force_count(size: float, step: float) -> None:
    rng = random.Random(int(size * step))
    times = [round(rng.uniform(0, 100), 2) for _ in range(200)]
    agg = WindowedAggregator(Hopping(size, step), {"n": Count()})
    for ts in times:
        agg.add("k", ts, 1.0)
    results = agg.close(math.inf)
    assert results, "no windows"
    for r in results:
        assert r.count == sum(1 for t in times if r.start <= t < r.end)
    assert sum(r.count for r in results) == len(times) * int(size / step)
