"""Reducers (pure): built-ins, percentiles, custom reducers and their JSON state."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest

from agents.reducers import (
    Count,
    FromValues,
    Last,
    Max,
    Mean,
    Min,
    Percentile,
    Reducer,
    ReducerLike,
    Sum,
    aggregate,
    as_reducer,
    fold,
    percentile,
)

VALUES = [3.0, -1.0, 4.0, 1.5, 9.0]


@pytest.mark.parametrize(
    ("reducer", "values", "expected"),
    [
        (Count(), VALUES, 5),
        (Count(), [], 0),
        (Sum(), VALUES, 16.5),
        (Sum(), [], 0.0),
        (Mean(), VALUES, 3.3),
        (Mean(), [], None),
        (Min(), VALUES, -1.0),
        (Min(), [], None),
        (Max(), VALUES, 9.0),
        (Max(), [], None),
        (Last(), VALUES, 9.0),
        (Last(), [2.0, 1.0], 1.0),
        (Last(), [], None),
        (Percentile(50), VALUES, 3.0),
        (Percentile(0), VALUES, -1.0),
        (Percentile(100), VALUES, 9.0),
        (Percentile(50), [1.0, 2.0, 3.0, 4.0], 2.5),
        (Percentile(95), [7.0], 7.0),
        (Percentile(0), [7.0], 7.0),
        (Percentile(100), [7.0], 7.0),
        (Percentile(99), [], None),
        (FromValues(len), VALUES, 5),
    ],
)
def test_builtin_reducers(reducer: ReducerLike, values: list[float], expected: Any) -> None:
    got = fold(reducer, values)
    if isinstance(expected, float):
        assert got == pytest.approx(expected)
    else:
        assert got == expected


@pytest.mark.parametrize("p", [0, 1, 5, 25, 50, 75, 90, 95, 99, 100])
def test_percentile_matches_statistics_inclusive_over_many_values(p: int) -> None:
    values = [float((i * 7919) % 1000) for i in range(1001)]
    # statistics.quantiles(method="inclusive") uses the same interpolation ("type 7").
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    expected = min(values) if p == 0 else max(values) if p == 100 else cuts[p - 1]
    assert percentile(values, p) == pytest.approx(expected)


@pytest.mark.parametrize("p", [-0.1, 100.5])
def test_percentile_out_of_range_is_refused(p: float) -> None:
    with pytest.raises(ValueError):
        Percentile(p)
    with pytest.raises(ValueError):
        percentile([1.0], p)


@pytest.mark.parametrize(
    ("reducer", "a", "b"),
    [
        (Count(), [1.0, 2.0], [3.0]),
        (Sum(), [1.0, 2.0], [3.0, 4.0]),
        (Mean(), [1.0, 2.0], [3.0, 10.0]),
        (Min(), [5.0], [3.0, 4.0]),
        (Min(), [], [3.0]),
        (Min(), [3.0], []),
        (Max(), [5.0], [3.0, 4.0]),
        (Last(), [5.0], [3.0, 4.0]),
        (Last(), [5.0], []),
        (Percentile(50), [1.0, 9.0], [3.0]),
    ],
)
def test_merge_equals_folding_everything(reducer: Any, a: list[float], b: list[float]) -> None:
    def state_of(values: list[float]) -> Any:
        s = reducer.init()
        for v in values:
            s = reducer.add(s, v)
        return s

    merged = reducer.merge(state_of(a), state_of(b))
    assert reducer.result(merged) == reducer.result(state_of(a + b))


@pytest.mark.parametrize(
    "reducer",
    [Count(), Sum(), Mean(), Min(), Max(), Last(), Percentile(90), FromValues(sorted)],
)
def test_states_survive_json(reducer: Reducer[Any]) -> None:
    state = reducer.init()
    for v in VALUES[:3]:
        state = reducer.add(state, v)
    back = json.loads(json.dumps(state))
    for v in VALUES[3:]:
        state = reducer.add(state, v)
        back = reducer.add(back, v)
    assert reducer.result(back) == reducer.result(state)


class Range:
    """A custom reducer: max - min, state ``[min, max]`` or None."""

    def init(self) -> list[float] | None:
        return None

    def add(self, state: list[float] | None, value: float) -> list[float] | None:
        if state is None:
            return [value, value]
        return [min(state[0], value), max(state[1], value)]

    def result(self, state: list[float] | None) -> float | None:
        return None if state is None else state[1] - state[0]


class TupleState:
    def init(self) -> object:
        return object()

    def add(self, state: object, value: float) -> object:
        return state

    def result(self, state: object) -> None:
        return None


def test_custom_reducers_and_functions() -> None:
    out = aggregate(
        VALUES,
        {
            "range": Range(),
            "median": statistics.median,
            "n": Count(),
            "top2": lambda v: sorted(v)[-2:],
        },
    )
    assert out == {"range": 10.0, "median": 3.0, "n": 5, "top2": [4.0, 9.0]}
    assert isinstance(as_reducer(statistics.median), FromValues)
    r = Range()
    assert as_reducer(r) is r


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (Mean, "Mean()"),
        (42, "not a reducer"),
        (TupleState(), "not JSON-serialisable"),
    ],
)
def test_as_reducer_refuses(bad: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        as_reducer(bad)
