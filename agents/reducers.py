"""Reducers: how a window turns the values it received into a result.

Pure and JSON-friendly: no I/O, no clock. A reducer is any object with three methods::

    init() -> S                  # the state of an empty window
    add(state: S, value) -> S    # fold one value in (may mutate ``state`` and return it)
    result(state: S) -> Any      # the window's result

and, optionally, ``merge(a: S, b: S) -> S`` (fold two states together; session windows use it
when a late event bridges two sessions). A plain function ``f(values: list[float]) -> Any`` is a
reducer too: it is wrapped in :class:`FromValues`, whose state is the list of values.

**State and JSON.** A reducer's state must be a JSON value (``None``, bool, int, float, str, and
lists / dicts with str keys of those): :class:`agents.windowing.WindowedAggregator` stores it as
is in its snapshot (RocksDB, changelog) and gets it back from ``json.loads``. Use lists, not
tuples (a tuple comes back as a list). Every built-in follows the rule: ``Count`` an int, ``Sum``
a float, ``Mean`` ``[sum, count]``, ``Min``/``Max``/``Last`` a float or ``None``, ``Percentile``
and ``FromValues`` the list of values. Reducers whose result needs every value
(:class:`FromValues`, :class:`Percentile`) share one list of values per window in the
aggregator, however many of them there are.

Quick use, list in, dict out::

    aggregate([1.0, 2.0, 6.0], {"mean": Mean(), "p50": Percentile(50)})
    # {"mean": 3.0, "p50": 2.0}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

S = TypeVar("S")

ValuesFunction = Callable[[list[float]], Any]


@runtime_checkable
class Reducer(Protocol[S]):
    """The custom reducer protocol (``merge`` is optional and not part of it)."""

    def init(self) -> S:
        """The state of an empty window (a JSON value)."""
        ...

    def add(self, state: S, value: float) -> S:
        """``state`` with ``value`` folded in; may mutate ``state`` and return it."""
        ...

    def result(self, state: S) -> Any:
        """The result of a window in ``state``."""
        ...


ReducerLike = Reducer[Any] | ValuesFunction
"""What :func:`as_reducer` (and the aggregator) accept: a reducer or a ``f(values)`` function."""


class Count:
    """The number of values. State: an int."""

    def init(self) -> int:
        """0."""
        return 0

    def add(self, state: int, value: float) -> int:
        """One more."""
        return state + 1

    def merge(self, a: int, b: int) -> int:
        """Both counts."""
        return a + b

    def result(self, state: int) -> int:
        """The count."""
        return state


class Sum:
    """The sum of the values (a running float sum). State: a float."""

    def init(self) -> float:
        """0.0."""
        return 0.0

    def add(self, state: float, value: float) -> float:
        """Add ``value``."""
        return state + value

    def merge(self, a: float, b: float) -> float:
        """Both sums."""
        return a + b

    def result(self, state: float) -> float:
        """The sum."""
        return state


class Mean:
    """The arithmetic mean, ``None`` for no values. State: ``[sum, count]``."""

    def init(self) -> list[float]:
        """``[0.0, 0]``."""
        return [0.0, 0]

    def add(self, state: list[float], value: float) -> list[float]:
        """Fold ``value`` in (in place)."""
        state[0] += value
        state[1] += 1
        return state

    def merge(self, a: list[float], b: list[float]) -> list[float]:
        """Both sums and counts."""
        return [a[0] + b[0], a[1] + b[1]]

    def result(self, state: list[float]) -> float | None:
        """``sum / count``."""
        return state[0] / state[1] if state[1] else None


class Min:
    """The smallest value, ``None`` for no values. State: a float or ``None``."""

    def init(self) -> float | None:
        """``None``."""
        return None

    def add(self, state: float | None, value: float) -> float | None:
        """The smaller of the two."""
        return value if state is None or value < state else state

    def merge(self, a: float | None, b: float | None) -> float | None:
        """The smaller of the two."""
        return a if b is None else self.add(a, b)

    def result(self, state: float | None) -> float | None:
        """The minimum."""
        return state


class Max:
    """The largest value, ``None`` for no values. State: a float or ``None``."""

    def init(self) -> float | None:
        """``None``."""
        return None

    def add(self, state: float | None, value: float) -> float | None:
        """The larger of the two."""
        return value if state is None or value > state else state

    def merge(self, a: float | None, b: float | None) -> float | None:
        """The larger of the two."""
        return a if b is None else self.add(a, b)

    def result(self, state: float | None) -> float | None:
        """The maximum."""
        return state


class Last:
    """The value added last (arrival order), ``None`` for no values. State: a float or ``None``.

    When two session windows merge, the later one's (``b``'s) last value wins; the aggregator
    then adds the event that bridged them, which arrived last of all.
    """

    def init(self) -> float | None:
        """``None``."""
        return None

    def add(self, state: float | None, value: float) -> float | None:
        """``value``."""
        return value

    def merge(self, a: float | None, b: float | None) -> float | None:
        """``b``'s, unless it is empty."""
        return a if b is None else b

    def result(self, state: float | None) -> float | None:
        """The last value."""
        return state


class FromValues:
    """A reducer computed from every value of the window: ``fn(values)``.

    Its state is the list of values (arrival order; after a session merge, the earlier
    session's values come first). Plain functions given as reducers are wrapped in it.
    """

    def __init__(self, fn: ValuesFunction) -> None:
        self.fn = fn

    def init(self) -> list[float]:
        """An empty list."""
        return []

    def add(self, state: list[float], value: float) -> list[float]:
        """Append ``value`` (in place)."""
        state.append(value)
        return state

    def merge(self, a: list[float], b: list[float]) -> list[float]:
        """``a`` then ``b``."""
        return a + b

    def result(self, state: list[float]) -> Any:
        """``fn(values)``."""
        return self.fn(state)


def percentile(values: Iterable[float], p: float) -> float | None:
    """The exact ``p``-th percentile (0..100) of ``values``, ``None`` when there are none.

    Linear interpolation between closest ranks (NumPy's default, "type 7"): the 50th of
    ``[1, 2, 3, 4]`` is 2.5, the 0th is the minimum and the 100th the maximum.
    """
    if not 0 <= p <= 100:
        raise ValueError("percentile must be within 0..100")
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * p / 100
    lo = math.floor(pos)
    frac = pos - lo
    if frac == 0:
        return xs[lo]
    return xs[lo] + (xs[lo + 1] - xs[lo]) * frac


class Percentile(FromValues):
    """The exact ``p``-th percentile (0..100) of the window's values; see :func:`percentile`."""

    def __init__(self, p: float) -> None:
        if not 0 <= p <= 100:
            raise ValueError("percentile must be within 0..100")
        self.p = p
        super().__init__(self._compute)

    def _compute(self, values: list[float]) -> float | None:
        return percentile(values, self.p)

    def __repr__(self) -> str:
        return f"Percentile({self.p!r})"


def as_reducer(r: ReducerLike) -> Reducer[Any]:
    """``r`` itself when it is a reducer, :class:`FromValues` of it when it is a function.

    Raises TypeError for a reducer class given without ``()`` and for anything else, and for a
    reducer whose state is not JSON-serialisable (checked once, on a window of one value).
    """
    if isinstance(r, type) and all(hasattr(r, m) for m in ("init", "add", "result")):
        raise TypeError(f"pass a reducer instance, e.g. {r.__name__}(), not the class")
    if isinstance(r, Reducer):
        reducer: Reducer[Any] = r
    elif callable(r):
        return FromValues(r)
    else:
        raise TypeError(f"not a reducer: {r!r} (needs init/add/result, or a f(values) function)")
    try:
        json.dumps(reducer.add(reducer.init(), 1.0), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the state of reducer {reducer!r} is not JSON-serialisable") from exc
    return reducer


def fold(reducer: ReducerLike, values: Iterable[float]) -> Any:
    """The result of ``reducer`` over ``values``: ``fold(Mean(), [1, 2]) == 1.5``."""
    r = as_reducer(reducer)
    state = r.init()
    for v in values:
        state = r.add(state, v)
    return r.result(state)


def aggregate(values: Iterable[float], reducers: Mapping[str, ReducerLike]) -> dict[str, Any]:
    """Every reducer's result over ``values``, by name (list in, dict out)."""
    vals = list(values)
    return {name: fold(r, vals) for name, r in reducers.items()}
