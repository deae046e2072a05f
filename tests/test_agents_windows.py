"""The demo's window statistics (pure, through agents.testing.run_app).

The window maths itself (bounds, grace, lateness, state) is tested in test_agents_windowing.py;
these tests pin the demo's use of it: epoch-aligned tumbling windows of
``config.window_seconds`` per device, closed at ``end + config.grace_seconds``.
"""

from __future__ import annotations

from typing import Any

import pytest

from agents.app import Output, Window
from agents.demo import demo_app
from agents.runtime.config import WorkerConfig
from agents.testing import run_app


def reading(dev: str, temperature: float, ts: float) -> tuple[str, dict[str, float]]:
    return f"sensors/{dev}/telemetry", {"temperature": temperature, "humidity": 50.0, "ts": ts}


def stats(outs: list[Output]) -> list[dict[str, Any]]:
    return [o.json() for o in outs if o.topic.endswith("/stats")]


def bounds(outs: list[Output]) -> list[tuple[str, float, float, int]]:
    return [(s["device"], s["window_start"], s["window_end"], s["count"]) for s in stats(outs)]


def config(**update: Any) -> WorkerConfig:
    return WorkerConfig(kafka_bootstrap="unused:9", metrics_port=None, **update)


@pytest.mark.parametrize(
    ("ts", "start"),
    [(0.0, 0.0), (9.999, 0.0), (10.0, 10.0), (1_700_000_003.5, 1_700_000_000.0), (-0.5, -10.0)],
)
def test_windows_are_aligned_to_the_epoch(ts: float, start: float) -> None:
    outs = run_app(demo_app(config()), [reading("d", 20.0, ts)], advance_to=start + 12.0)
    assert bounds(outs) == [("d", start, start + 10.0, 1)]


@pytest.mark.parametrize(("advance_to", "closed"), [(1011.9, False), (1012.0, True)])
def test_a_window_closes_at_end_plus_grace(advance_to: float, closed: bool) -> None:
    inputs = [reading("d1", v, ts) for ts, v in [(1000.0, 20.0), (1005.0, 22.0), (1009.9, 27.0)]]
    inputs.append(reading("d2", 5.0, 1001.0))
    outs = run_app(demo_app(config()), inputs, advance_to=advance_to)
    if not closed:
        assert outs == []
        return
    assert bounds(outs) == [("d1", 1000.0, 1010.0, 3), ("d2", 1000.0, 1010.0, 1)]
    d1 = stats(outs)[0]
    assert (d1["mean"], d1["min"], d1["max"]) == (pytest.approx(23.0), 20.0, 27.0)


def test_a_reading_past_end_plus_grace_closes_the_window_at_once() -> None:
    outs = run_app(
        demo_app(config()),
        [reading("d", 20.0, 100.0), reading("d", 21.0, 111.9), reading("d", 22.0, 112.0)],
    )
    assert bounds(outs) == [("d", 100.0, 110.0, 1)]
    assert outs[0].topic == "sensors/d/stats"


def test_late_readings_are_left_out_of_the_stats_but_still_alert() -> None:
    app = demo_app(config())
    outs = run_app(
        app,
        [
            reading("d", 20.0, 100.0),
            reading("e", 20.0, 112.0),  # same partition: its watermark closes [100, 110)
            reading("d", 35.0, 105.0),  # late: not in any stats, but hot
            reading("d", 22.0, 113.0),
        ],
        advance_to=200.0,
    )
    assert [o.topic for o in outs] == [
        "sensors/d/stats",
        "alerts/d",
        "devices/d/commands",
        "sensors/d/stats",
        "sensors/e/stats",
    ]
    assert bounds(outs) == [("d", 100.0, 110.0, 1), ("d", 110.0, 120.0, 1), ("e", 110.0, 120.0, 1)]
    assert outs[1].json()["ts"] == 105.0
    window = app.parts[("w", "temperature")]
    assert isinstance(window, Window) and window.late == 1


def test_window_length_and_grace_come_from_the_config() -> None:
    app = demo_app(config(window_seconds=60.0, grace_seconds=5.0))
    inputs = [reading("d", 20.0, 30.0), reading("d", 24.0, 59.0), reading("d", 1.0, 64.9)]
    assert bounds(run_app(app, inputs)) == []  # 60 + 5 not reached
    inputs.append(reading("d", 1.0, 65.0))
    assert bounds(run_app(app, inputs)) == [("d", 0.0, 60.0, 2)]
