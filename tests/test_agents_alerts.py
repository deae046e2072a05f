"""The demo's alerts and commands (pure, through agents.testing.run_app): when a reading is
above the threshold, at most once per device per cool-down of event time.

The alerter itself (rules, cool-down, state) is tested in test_agents_alerting.py; these tests
pin the demo's contract on top of it, in particular that a device that stays hot alerts again
one cool-down later (the demo's alerts are notifications, not conditions that must clear).
"""

from __future__ import annotations

from typing import Any

from agents.app import Output
from agents.demo import demo_app
from agents.runtime.config import WorkerConfig
from agents.testing import run_app


def reading(dev: str, temperature: float, ts: float) -> tuple[str, dict[str, float]]:
    return f"sensors/{dev}/telemetry", {"temperature": temperature, "humidity": 50.0, "ts": ts}


def alerts(outs: list[Output]) -> list[tuple[str, float]]:
    got = [(o.json()["device"], o.json()["ts"]) for o in outs if o.topic.startswith("alerts/")]
    commands = [o.json()["device"] for o in outs if o.topic.endswith("/commands")]
    assert commands == [dev for dev, _ in got], "one command with each alert"
    return got


def run(readings: list[tuple[str, float, float]], **update: Any) -> list[tuple[str, float]]:
    config = WorkerConfig(kafka_bootstrap="unused:9", metrics_port=None, **update)
    return alerts(run_app(demo_app(config), [reading(*r) for r in readings]))


def test_one_alert_per_device_per_cool_down_by_event_time_also_while_still_hot() -> None:
    got = run(
        [
            ("a", 31.0, 1000.0),
            ("a", 32.0, 1059.9),  # inside the cool-down
            ("b", 31.0, 1001.0),  # other devices are independent
            ("a", 33.0, 1060.0),  # one cool-down later, still hot: alerts again
            ("a", 33.0, 1061.0),
        ]
    )
    assert got == [("a", 1000.0), ("b", 1001.0), ("a", 1060.0)]


def test_cooling_down_does_not_shorten_the_cool_down() -> None:
    got = run([("a", 31.0, 0.0), ("a", 20.0, 10.0), ("a", 31.0, 20.0), ("a", 31.0, 65.0)])
    assert got == [("a", 0.0), ("a", 65.0)]


def test_a_reading_older_than_the_device_latest_never_alerts() -> None:
    got = run([("a", 31.0, 1060.0), ("a", 31.0, 1000.0), ("a", 31.0, 1000.0)])
    assert got == [("a", 1060.0)]
    # Event time decides and the latest reading wins: 1070 is a cool-down after the alert at
    # 1000, but older than the reading at 1100, so it is ignored.
    got = run([("a", 31.0, 1000.0), ("a", 20.0, 1100.0), ("a", 31.0, 1070.0)])
    assert got == [("a", 1000.0)]


def test_readings_at_or_below_the_threshold_never_alert() -> None:
    assert run([("a", 30.0, 1.0), ("a", -40.0, 2.0), ("a", 29.99, 3.0)]) == []
    assert run([("a", 25.5, 1.0)], threshold=25.0) == [("a", 1.0)]


def test_cool_down_from_the_config_and_zero_alerts_every_hot_reading() -> None:
    readings = [("a", 31.0, 0.0), ("a", 31.0, 5.0), ("a", 31.0, 10.0)]
    assert run(readings, alert_cooldown_seconds=10.0) == [("a", 0.0), ("a", 10.0)]
    assert run(readings, alert_cooldown_seconds=0.0) == [("a", 0.0), ("a", 5.0), ("a", 10.0)]
