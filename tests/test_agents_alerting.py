"""Alerts (pure): threshold, rate of change, absence; de-duplication, cooldown, resolve, state."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from agents.alerting import (
    Absence,
    Alerter,
    AlertEvent,
    AlertRule,
    RateOfChange,
    Threshold,
)

# A step: ("o", key, ts, value) = observe, ("t", now) = tick.
Step = tuple[Any, ...]
# An expected event: (kind, key, ts, value, fired_at); the rule is the only rule, "r".
Expected = tuple[str, str, float, float, float]


def play(alerter: Alerter, steps: list[Step]) -> list[AlertEvent]:
    out: list[AlertEvent] = []
    for step in steps:
        if step[0] == "o":
            out.extend(alerter.observe(step[1], step[2], step[3]))
        else:
            out.extend(alerter.tick(step[1]))
    return out


def brief(events: list[AlertEvent]) -> list[Expected]:
    return [(e.kind, e.key, e.ts, e.value, e.fired_at) for e in events]


CASES: list[tuple[str, AlertRule, list[Step], list[Expected]]] = [
    (
        "threshold fires once while active, resolves, cooldown holds a re-fire back",
        AlertRule("r", Threshold(above=30), cooldown=60),
        [
            ("o", "a", 0.0, 25.0),
            ("o", "a", 10.0, 31.0),
            ("o", "a", 20.0, 35.0),  # still active: no second "fired"
            ("o", "a", 30.0, 30.0),  # not above: resolved
            ("o", "a", 40.0, 40.0),  # 40 < 10 + 60: held back
            ("o", "a", 69.9, 40.0),  # still held back
            ("o", "a", 70.0, 40.0),  # exactly one cooldown after the last firing
        ],
        [
            ("fired", "a", 10.0, 31.0, 10.0),
            ("resolved", "a", 30.0, 30.0, 10.0),
            ("fired", "a", 70.0, 40.0, 70.0),
        ],
    ),
    (
        "threshold below, and keys are independent",
        AlertRule("r", Threshold(below=0)),
        [
            ("o", "a", 0.0, -1.0),
            ("o", "b", 1.0, -2.0),
            ("o", "a", 2.0, 0.0),
            ("o", "b", 3.0, -3.0),
        ],
        [
            ("fired", "a", 0.0, -1.0, 0.0),
            ("fired", "b", 1.0, -2.0, 1.0),
            ("resolved", "a", 2.0, 0.0, 0.0),
        ],
    ),
    (
        "threshold band: above or below",
        AlertRule("r", Threshold(above=30, below=10)),
        [("o", "a", 0.0, 20.0), ("o", "a", 1.0, 5.0), ("o", "a", 2.0, 31.0), ("o", "a", 3.0, 20.0)],
        [("fired", "a", 1.0, 5.0, 1.0), ("resolved", "a", 3.0, 20.0, 1.0)],
    ),
    (
        "clear_after: two false readings in a row resolve; a true one in between resets",
        AlertRule("r", Threshold(above=30), clear_after=2),
        [
            ("o", "a", 0.0, 31.0),
            ("o", "a", 1.0, 20.0),
            ("o", "a", 2.0, 32.0),
            ("o", "a", 3.0, 20.0),
            ("o", "a", 4.0, 20.0),
        ],
        [("fired", "a", 0.0, 31.0, 0.0), ("resolved", "a", 4.0, 20.0, 0.0)],
    ),
    (
        "zero cooldown: fires again at once after resolving, but never twice at one ts",
        AlertRule("r", Threshold(above=30)),
        [
            ("o", "a", 0.0, 31.0),
            ("o", "a", 0.0, 20.0),
            ("o", "a", 0.0, 31.0),  # same ts as the firing: held back
            ("o", "a", 1.0, 31.0),
        ],
        [
            ("fired", "a", 0.0, 31.0, 0.0),
            ("resolved", "a", 0.0, 20.0, 0.0),
            ("fired", "a", 1.0, 31.0, 1.0),
        ],
    ),
    (
        "out-of-order readings are ignored",
        AlertRule("r", Threshold(above=30)),
        [("o", "a", 10.0, 20.0), ("o", "a", 5.0, 99.0), ("o", "a", 11.0, 31.0)],
        [("fired", "a", 11.0, 31.0, 11.0)],
    ),
    (
        "rate of change: |dv| / dt above the limit, either direction",
        AlertRule("r", RateOfChange(max_per_second=1.0)),
        [
            ("o", "a", 0.0, 10.0),
            ("o", "a", 10.0, 20.0),  # 1.0/s: not above
            ("o", "a", 12.0, 17.0),  # 1.5/s down: fires
            ("o", "a", 12.0, 99.0),  # same ts: not evaluated
            ("o", "a", 13.0, 99.5),  # 0.5/s from the previous reading: resolves
        ],
        [("fired", "a", 12.0, 17.0, 12.0), ("resolved", "a", 13.0, 99.5, 12.0)],
    ),
    (
        "absence: fires from tick after more than N seconds, resolves at the next reading",
        AlertRule("r", Absence(30)),
        [
            ("o", "a", 0.0, 1.0),
            ("t", 30.0),  # exactly N seconds: not yet
            ("t", 30.5),
            ("t", 45.0),  # still active: not again
            ("o", "a", 50.0, 2.0),
            ("t", 79.0),
        ],
        [("fired", "a", 30.0, 1.0, 30.0), ("resolved", "a", 50.0, 2.0, 30.0)],
    ),
    (
        "absence found by observe when no tick ran (replay): fired and resolved together",
        AlertRule("r", Absence(30)),
        [("o", "a", 0.0, 1.0), ("o", "a", 30.0, 2.0), ("o", "a", 100.0, 3.0)],
        [("fired", "a", 60.0, 2.0, 60.0), ("resolved", "a", 100.0, 3.0, 60.0)],
    ),
    (
        "absence cooldown: the next firing waits for the cooldown, at a deterministic time",
        AlertRule("r", Absence(10), cooldown=100),
        [
            ("o", "a", 0.0, 1.0),
            ("t", 11.0),
            ("o", "a", 12.0, 2.0),
            ("t", 50.0),  # silent since 12 (> 10 s) but within the cooldown of 10
            ("t", 109.9),
            ("t", 130.0),
            ("o", "a", 131.0, 3.0),
            ("o", "a", 132.0, 4.0),
            ("o", "a", 300.0, 5.0),  # silence 142..300, cooldown over at 210: fired at 210
        ],
        [
            ("fired", "a", 10.0, 1.0, 10.0),
            ("resolved", "a", 12.0, 2.0, 10.0),
            ("fired", "a", 110.0, 2.0, 110.0),
            ("resolved", "a", 131.0, 3.0, 110.0),
            ("fired", "a", 210.0, 4.0, 210.0),
            ("resolved", "a", 300.0, 5.0, 210.0),
        ],
    ),
    (
        "absence only for keys seen at least once",
        AlertRule("r", Absence(5)),
        [("t", 100.0), ("o", "a", 100.0, 1.0), ("t", 104.0), ("t", 106.0)],
        [("fired", "a", 105.0, 1.0, 105.0)],
    ),
]


@pytest.mark.parametrize(
    ("rule", "steps", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rules(rule: AlertRule, steps: list[Step], expected: list[Expected]) -> None:
    alerter = Alerter(rule)
    assert brief(play(alerter, steps)) == expected


def test_absence_events_do_not_depend_on_how_often_tick_runs() -> None:
    rule = AlertRule("r", Absence(10), cooldown=40)
    readings = [("o", "a", t, t) for t in [0.0, 5.0, 40.0, 41.0, 70.0]]
    sparse = play(Alerter(rule), readings)
    ticks: list[Step] = [("t", t / 2) for t in range(160)]

    def when(step: Step) -> tuple[float, int]:
        return (step[1], 0) if step[0] == "t" else (step[2], 1)  # ticks first at equal times

    dense = play(Alerter(rule), sorted(readings + ticks, key=when))
    assert [e.id for e in sparse] == [e.id for e in dense]
    assert brief(sparse) == brief(dense)
    assert [(e.kind, e.ts) for e in sparse] == [
        ("fired", 15.0),
        ("resolved", 40.0),
        ("fired", 55.0),  # silent from 51, held back by the cooldown until 15 + 40
        ("resolved", 70.0),
    ]


def test_events_ids_and_payloads() -> None:
    alerter = Alerter(
        [AlertRule("hot", Threshold(above=30)), AlertRule("cold", Threshold(below=0))]
    )
    (fired,) = alerter.observe("dev-1", 100.0, 31.5)
    assert fired.id == "hot|dev-1|100.0|fired"
    assert fired.as_dict() == {
        "id": "hot|dev-1|100.0|fired",
        "kind": "fired",
        "rule": "hot",
        "key": "dev-1",
        "ts": 100.0,
        "value": 31.5,
        "fired_at": 100.0,
    }
    (resolved,) = alerter.observe("dev-1", 160, 20.0)
    assert resolved.id == "hot|dev-1|100.0|resolved"
    assert alerter.active() == []
    events = alerter.observe("dev-1", 170.0, -5.0)
    assert [e.id for e in events] == ["cold|dev-1|170.0|fired"]
    assert alerter.active() == [("cold", "dev-1", 170.0)]


def test_rules_in_one_alerter_come_out_in_rule_order() -> None:
    alerter = Alerter(
        [
            AlertRule("jump", RateOfChange(max_per_second=2)),
            AlertRule("hot", Threshold(above=30)),
            AlertRule("silent", Absence(60)),
        ]
    )
    assert alerter.observe("a", 0.0, 20.0) == []
    events = alerter.observe("a", 100.0, 40.0)
    assert [(e.rule, e.kind, e.ts) for e in events] == [
        ("hot", "fired", 100.0),
        ("silent", "fired", 60.0),
        ("silent", "resolved", 100.0),
    ]
    events = alerter.observe("a", 101.0, 45.0)
    assert [(e.rule, e.kind) for e in events] == [("jump", "fired")]


def test_suppressed_and_out_of_order_counters_and_forget() -> None:
    alerter = Alerter(AlertRule("r", Threshold(above=1), cooldown=10))
    play(alerter, [("o", "a", 0.0, 2.0), ("o", "a", 1.0, 0.0), ("o", "a", 2.0, 2.0)])
    assert alerter.suppressed == 1
    alerter.observe("a", 1.5, 9.0)
    assert alerter.out_of_order == 1
    absent = Alerter(AlertRule("gone", Absence(5)))
    absent.observe("a", 0.0, 1.0)
    absent.changes()
    absent.forget("a")
    assert absent.changes() == {"a": None}
    assert absent.tick(100.0) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Threshold(), "above, below"),
        (lambda: Threshold(above=1, below=2), "above must not be lower"),
        (lambda: RateOfChange(-1), "max_per_second"),
        (lambda: Absence(0), "seconds"),
        (lambda: AlertRule("", Absence(1)), "name"),
        (lambda: AlertRule("r", Absence(1), cooldown=-1), "cooldown"),
        (lambda: AlertRule("r", Absence(1), clear_after=0), "clear_after"),
        (lambda: Alerter([AlertRule("r", Absence(1)), AlertRule("r", Absence(2))]), "unique"),
    ],
)
def test_invalid_configurations(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


RULES = [
    AlertRule("hot", Threshold(above=30), cooldown=20, clear_after=2),
    AlertRule("jump", RateOfChange(max_per_second=3), cooldown=5),
    AlertRule("silent", Absence(8), cooldown=15),
]


def random_steps(seed: int, n: int) -> list[Step]:
    rng = random.Random(seed)
    steps: list[Step] = []
    t = 0.0
    for i in range(n):
        t += rng.uniform(0, 2)
        key = f"d{rng.randrange(4)}"
        if rng.random() < 0.1:
            t += rng.uniform(5, 20)  # a silence
        steps.append(("o", key, round(t - rng.uniform(0, 1), 2), round(rng.uniform(0, 40), 1)))
        if i % 5 == 4:
            steps.append(("t", round(t, 2)))
    return steps


@pytest.mark.parametrize("via", ["snapshot", "changes"])
def test_restore_round_trip_gives_identical_events(via: str) -> None:
    steps = random_steps(seed=3, n=400)
    expected = play(Alerter(RULES), steps)
    assert {e.rule for e in expected} == {"hot", "jump", "silent"}
    assert {e.kind for e in expected} == {"fired", "resolved"}
    for cut in (1, 77, 250, len(steps) - 1):
        first = Alerter(RULES)
        events = play(first, steps[:cut])
        if via == "snapshot":
            saved = json.loads(json.dumps(first.snapshot(), allow_nan=False))
        else:
            store = {k: json.dumps(v) for k, v in first.changes().items() if v is not None}
            saved = {
                "suppressed": first.suppressed,
                "out_of_order": first.out_of_order,
                "keys": {k: json.loads(v) for k, v in store.items()},
            }
        second = Alerter(RULES)
        second.restore(saved)
        assert second.snapshot() == first.snapshot()
        assert events + play(second, steps[cut:]) == expected


def test_restore_drops_state_of_rules_no_longer_configured() -> None:
    old = Alerter([AlertRule("hot", Threshold(above=1)), AlertRule("cold", Threshold(below=0))])
    old.observe("a", 0.0, 5.0)
    new = Alerter(AlertRule("cold", Threshold(below=0)))
    new.restore(old.snapshot())
    assert new.snapshot()["keys"] == {"a": {"ts": 0.0, "value": 5.0, "rules": {}}}
    with pytest.raises(ValueError, match="version"):
        new.restore({"version": 99, "keys": {}})


def test_repeat_fires_again_while_active_once_the_cooldown_has_passed() -> None:
    from agents.alerting import Absence, Alerter, AlertRule, Threshold

    al = Alerter([AlertRule("hot", Threshold(above=30.0), cooldown=60.0, repeat=True)])
    assert [e.kind for e in al.observe("d", 0.0, 31.0)] == ["fired"]
    assert al.observe("d", 30.0, 32.0) == []  # still hot, within the cooldown
    (again,) = al.observe("d", 60.0, 33.0)  # still hot, one cooldown later: a reminder
    assert (again.kind, again.ts, again.id) == ("fired", 60.0, "hot|d|60.0|fired")
    assert al.observe("d", 100.0, 31.0) == []
    (cool,) = al.observe("d", 130.0, 20.0)
    assert (cool.kind, cool.fired_at) == ("resolved", 60.0)
    # Without repeat, an active alert never fires again.
    once = Alerter([AlertRule("hot", Threshold(above=30.0), cooldown=60.0)])
    once.observe("d", 0.0, 31.0)
    assert once.observe("d", 60.0, 33.0) == once.observe("d", 500.0, 33.0) == []
    with pytest.raises(ValueError, match="repeat"):
        AlertRule("silent", Absence(seconds=10.0), repeat=True)
