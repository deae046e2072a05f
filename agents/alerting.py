"""Alerts per key: threshold, rate of change and absence of data, with de-duplication.

Pure: no I/O, no clock. Readings come in with their event time (:meth:`Alerter.observe`), and
time for absence checks is passed in (:meth:`Alerter.tick`); events come out::

    alerter = Alerter([AlertRule("hot", Threshold(above=30.0), cooldown=300.0)])
    alerter.observe("dev-1", ts=1000.0, value=31.2)  # [AlertEvent(kind="fired", ...)]

Rules, per (rule, key):

- :class:`Threshold` holds when ``value > above`` or ``value < below``.
- :class:`RateOfChange` holds when ``|value - previous value| / (ts - previous ts)`` exceeds
  ``max_per_second`` (two consecutive readings of the key; not evaluated for a reading with
  the same ``ts`` as the previous one).
- :class:`Absence` holds when a key that was seen has sent nothing for more than ``seconds``.
  It fires from :meth:`Alerter.tick` (``now > last ts + seconds``) and, so that replaying data
  fast gives the alerts live running gave, also from :meth:`Alerter.observe` when a reading
  arrives after such a silence (then "fired" and "resolved" come together). Its firing time is
  ``last ts + seconds`` (later if the cooldown says so), never the moment ``tick`` ran, so the
  event and its id do not depend on how often ``tick`` is called.
- While an alert is active it does not fire again. It resolves (a "resolved" event) when the
  condition was false for the latest ``clear_after`` readings in a row (threshold, rate), or
  when a reading arrives (absence). Once resolved, it may fire again only at an event time at
  least ``cooldown`` seconds after its last firing (and strictly later than it); a firing held
  back by the cooldown is counted in :attr:`Alerter.suppressed`.
- Readings older than the key's latest reading are ignored (counted in
  :attr:`Alerter.out_of_order`): event time decides, and the latest reading wins.

Every :class:`AlertEvent` has a deterministic :attr:`AlertEvent.id`,
``rule|key|fired_at|kind``, so a duplicate produced after a rebalance or a replay is
recognisable; ``fired_at`` (the event time of the firing) links a "resolved" to its "fired".

State is JSON-safe: :meth:`Alerter.snapshot` / :meth:`Alerter.restore`, and
:meth:`Alerter.changes` for the keys touched since the last call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SNAPSHOT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Threshold:
    """Holds when ``value > above`` or ``value < below`` (give one or both)."""

    above: float | None = None
    below: float | None = None

    def __post_init__(self) -> None:
        if self.above is None and self.below is None:
            raise ValueError("give above, below or both")
        if self.above is not None and self.below is not None and self.above < self.below:
            raise ValueError("above must not be lower than below (it would always hold)")

    def holds(self, value: float) -> bool:
        """Whether ``value`` is out of bounds."""
        return (self.above is not None and value > self.above) or (
            self.below is not None and value < self.below
        )


@dataclass(frozen=True, slots=True)
class RateOfChange:
    """Holds when the value changes faster than ``max_per_second`` (either direction)."""

    max_per_second: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_per_second) and self.max_per_second >= 0):
            raise ValueError("max_per_second must be a finite number >= 0")

    def holds(self, prev_ts: float, prev_value: float, ts: float, value: float) -> bool:
        """Whether the change from the previous reading is too fast (``ts > prev_ts``)."""
        return abs(value - prev_value) / (ts - prev_ts) > self.max_per_second


@dataclass(frozen=True, slots=True)
class Absence:
    """Holds when a key that was seen has sent no reading for more than ``seconds``."""

    seconds: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError("seconds must be a finite number > 0")


Condition = Threshold | RateOfChange | Absence


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A named condition with its de-duplication settings.

    ``cooldown``: seconds of event time after a firing before the rule may fire again for the
    same key (once resolved). ``clear_after``: consecutive readings with the condition false
    needed to resolve (threshold, rate of change; an absence resolves at the next reading).
    ``repeat``: while the alert stays active, fire it again at the first reading at least
    ``cooldown`` seconds after the last firing (a reminder, as Alertmanager's
    ``repeat_interval``; threshold and rate of change only; with no cooldown, every reading
    that holds the condition fires).
    """

    name: str
    condition: Condition
    cooldown: float = 0.0
    clear_after: int = 1
    repeat: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a rule needs a name")
        if not (math.isfinite(self.cooldown) and self.cooldown >= 0):
            raise ValueError("cooldown must be a finite number >= 0")
        if self.clear_after < 1:
            raise ValueError("clear_after must be at least 1")
        if self.repeat and isinstance(self.condition, Absence):
            raise ValueError("repeat is for threshold and rate-of-change rules")


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert firing or resolving for one key."""

    kind: Literal["fired", "resolved"]
    rule: str
    key: str
    ts: float
    """Event time of this event (for "resolved": of the reading that resolved it)."""
    value: float
    """The reading's value (for an absence: the last value seen before the silence)."""
    fired_at: float
    """Event time of the firing this event belongs to."""

    @property
    def id(self) -> str:
        """``rule|key|fired_at|kind``: deterministic, unique per event."""
        return f"{self.rule}|{self.key}|{self.fired_at!r}|{self.kind}"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready payload."""
        return {
            "id": self.id,
            "kind": self.kind,
            "rule": self.rule,
            "key": self.key,
            "ts": self.ts,
            "value": self.value,
            "fired_at": self.fired_at,
        }


@dataclass(slots=True)
class _RuleState:
    active: bool = False
    fired_at: float | None = None  # the last firing (of the active alert, if any)
    clear: int = 0  # consecutive readings with the condition false, while active

    def is_default(self) -> bool:
        return not self.active and self.fired_at is None and self.clear == 0


@dataclass(slots=True)
class _KeyState:
    ts: float
    value: float
    rules: dict[str, _RuleState] = field(default_factory=dict)


class Alerter:
    """Applies alert rules to readings per key; see the module docs for the rules."""

    def __init__(self, rules: AlertRule | Iterable[AlertRule]) -> None:
        self.rules = [rules] if isinstance(rules, AlertRule) else list(rules)
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rule names must be unique: {names}")
        self._keys: dict[str, _KeyState] = {}
        self._changed: set[str] = set()
        self.suppressed = 0
        self.out_of_order = 0

    # -- events ---------------------------------------------------------------------------

    def observe(self, key: str, ts: float, value: float) -> list[AlertEvent]:
        """Apply every rule to a reading; return the events it causes, in rule order."""
        if not math.isfinite(ts):
            raise ValueError("event time must be finite")
        ts = float(ts)
        prev = self._keys.get(key)
        if prev is not None and ts < prev.ts:
            self.out_of_order += 1
            return []
        if prev is None:
            ks = self._keys[key] = _KeyState(ts, value)
        else:
            ks = prev
        events: list[AlertEvent] = []
        for rule in self.rules:
            cond = rule.condition
            rs = ks.rules.get(rule.name) or _RuleState()
            if isinstance(cond, Absence):
                if prev is not None:
                    self._absence_on_reading(rule, cond, rs, key, prev, ts, value, events)
            elif isinstance(cond, Threshold):
                self._step(rule, rs, key, ts, value, cond.holds(value), events)
            elif prev is not None and ts > prev.ts:
                holds = cond.holds(prev.ts, prev.value, ts, value)
                self._step(rule, rs, key, ts, value, holds, events)
            self._put(ks, rule.name, rs)
        ks.ts, ks.value = ts, value
        self._changed.add(key)
        return events

    def _may_fire(self, rule: AlertRule, rs: _RuleState, ts: float) -> bool:
        return rs.fired_at is None or (ts > rs.fired_at and ts >= rs.fired_at + rule.cooldown)

    def _step(
        self,
        rule: AlertRule,
        rs: _RuleState,
        key: str,
        ts: float,
        value: float,
        holds: bool,
        events: list[AlertEvent],
    ) -> None:
        if holds:
            rs.clear = 0
            if rs.active and not (rule.repeat and self._may_fire(rule, rs, ts)):
                return
            if self._may_fire(rule, rs, ts):
                rs.active, rs.fired_at = True, ts
                events.append(AlertEvent("fired", rule.name, key, ts, value, ts))
            else:
                self.suppressed += 1
        elif rs.active:
            rs.clear += 1
            if rs.clear >= rule.clear_after:
                assert rs.fired_at is not None
                rs.active, rs.clear = False, 0
                events.append(AlertEvent("resolved", rule.name, key, ts, value, rs.fired_at))

    def _absence_start(self, rule: AlertRule, cond: Absence, rs: _RuleState, last: float) -> float:
        """The event time an absence after a reading at ``last`` would fire at."""
        at = last + cond.seconds
        if rs.fired_at is not None:
            at = max(at, rs.fired_at + rule.cooldown)
        return at

    def _absence_on_reading(
        self,
        rule: AlertRule,
        cond: Absence,
        rs: _RuleState,
        key: str,
        prev: _KeyState,
        ts: float,
        value: float,
        events: list[AlertEvent],
    ) -> None:
        if not rs.active and ts > prev.ts + cond.seconds:
            # A silence that no tick reported (replay, or ticks too rare): report it now.
            at = self._absence_start(rule, cond, rs, prev.ts)
            if at < ts:
                rs.active, rs.fired_at = True, at
                events.append(AlertEvent("fired", rule.name, key, at, prev.value, at))
            else:
                self.suppressed += 1
        if rs.active:
            assert rs.fired_at is not None
            rs.active = False
            events.append(AlertEvent("resolved", rule.name, key, ts, value, rs.fired_at))

    def tick(self, now: float) -> list[AlertEvent]:
        """Fire absence alerts due at time ``now``; events by rule, then key.

        Cost: one pass over the keys per absence rule.
        """
        events: list[AlertEvent] = []
        for rule in self.rules:
            cond = rule.condition
            if not isinstance(cond, Absence):
                continue
            for key in sorted(self._keys):
                ks = self._keys[key]
                if now <= ks.ts + cond.seconds:
                    continue
                rs = ks.rules.get(rule.name) or _RuleState()
                if rs.active:
                    continue
                at = self._absence_start(rule, cond, rs, ks.ts)
                if now < at:
                    continue  # held back by the cooldown until ``at``
                rs.active, rs.fired_at = True, at
                events.append(AlertEvent("fired", rule.name, key, at, ks.value, at))
                self._put(ks, rule.name, rs)
                self._changed.add(key)
        return events

    def forget(self, key: str) -> None:
        """Drop everything known about ``key`` (a decommissioned device: no more absence)."""
        if self._keys.pop(key, None) is not None:
            self._changed.add(key)

    @staticmethod
    def _put(ks: _KeyState, name: str, rs: _RuleState) -> None:
        if rs.is_default():
            ks.rules.pop(name, None)
        else:
            ks.rules[name] = rs

    # -- inspection -----------------------------------------------------------------------

    def active(self) -> list[tuple[str, str, float]]:
        """``(rule, key, fired_at)`` of every active alert, sorted."""
        out: list[tuple[str, str, float]] = []
        for key, ks in self._keys.items():
            for name, rs in ks.rules.items():
                if rs.active:
                    assert rs.fired_at is not None
                    out.append((name, key, rs.fired_at))
        return sorted(out)

    # -- state ----------------------------------------------------------------------------

    @staticmethod
    def _key_state(ks: _KeyState) -> dict[str, Any]:
        return {
            "ts": ks.ts,
            "value": ks.value,
            "rules": {
                name: {"active": rs.active, "fired_at": rs.fired_at, "clear": rs.clear}
                for name, rs in sorted(ks.rules.items())
            },
        }

    def snapshot(self) -> dict[str, Any]:
        """All state as a fresh JSON-safe dict."""
        return {
            "version": SNAPSHOT_VERSION,
            "rules": [r.name for r in self.rules],
            "suppressed": self.suppressed,
            "out_of_order": self.out_of_order,
            "keys": {k: self._key_state(self._keys[k]) for k in sorted(self._keys)},
        }

    def changes(self) -> dict[str, dict[str, Any] | None]:
        """Keys touched since the last call: their state as in ``snapshot()["keys"]``, or
        ``None`` for a forgotten key."""
        out: dict[str, dict[str, Any] | None] = {}
        for k in sorted(self._changed):
            ks = self._keys.get(k)
            out[k] = None if ks is None else self._key_state(ks)
        self._changed.clear()
        return out

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace all state with ``snapshot``; only ``keys`` is required. State of rules no
        longer configured is dropped. Restoring marks no change."""
        version = snapshot.get("version", SNAPSHOT_VERSION)
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"unknown snapshot version {version!r}")
        names = {r.name for r in self.rules}
        self._keys.clear()
        self._changed.clear()
        self.suppressed = int(snapshot.get("suppressed", 0))
        self.out_of_order = int(snapshot.get("out_of_order", 0))
        for key, raw in snapshot["keys"].items():
            if raw is None:
                continue
            ks = _KeyState(float(raw["ts"]), float(raw["value"]))
            for name, r in raw.get("rules", {}).items():
                if name in names:
                    fired_at = r.get("fired_at")
                    ks.rules[name] = _RuleState(
                        bool(r["active"]),
                        None if fired_at is None else float(fired_at),
                        int(r.get("clear", 0)),
                    )
            self._keys[key] = ks
