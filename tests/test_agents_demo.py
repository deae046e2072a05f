"""The demo app's contract without a broker: payloads, keys, dead letters, state, settings.

Window and alert rules of the demo are in test_agents_windows.py and test_agents_alerts.py.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest

from agents.app import Output
from agents.demo import AGENT_NAME, APP_NAME, COMMAND_TIMEOUT_S, demo_app
from agents.runtime.config import WorkerConfig
from agents.runtime.engine import AppEngine, Record, record
from agents.testing import run_app
from bayou.settings import Settings
from ingress.contract import H_INGRESS_TS, H_MQTT_TOPIC
from ingress.contract.commands import is_command_id

ISSUED_AT = 4242.5


def cfg(**update: Any) -> WorkerConfig:
    return WorkerConfig(kafka_bootstrap="unused:9", metrics_port=None, **update)


def reading(dev: str, temperature: float, ts: float) -> tuple[str, dict[str, float]]:
    return f"sensors/{dev}/telemetry", {"temperature": temperature, "humidity": 50.0, "ts": ts}


def run(inputs: list[Any], advance_to: float | None = None, **update: Any) -> list[Output]:
    return run_app(demo_app(cfg(**update), clock=lambda: ISSUED_AT), inputs, advance_to=advance_to)


def test_hot_reading_alerts_and_commands_with_the_contract_payloads() -> None:
    outs = run([reading("dev-1", 30.0, 999.0), reading("dev-1", 31.5, 1000.0)])
    # 30.0 is not above the threshold: only the second reading alerts.
    assert [(o.kind, o.topic) for o in outs] == [
        ("mqtt", "alerts/dev-1"),
        ("mqtt", "devices/dev-1/commands"),
    ]
    alert, command = outs
    assert alert.json() == {"device": "dev-1", "temperature": 31.5, "threshold": 30.0, "ts": 1000.0}
    assert command.json() == {
        "command": "cool", "device": "dev-1", "reason": "temperature", "issued_at": ISSUED_AT,
        "command_id": command.command_id,
    }  # fmt: skip
    # The fleet answers it: the tracker waits COMMAND_TIMEOUT_S for that.
    assert is_command_id(command.command_id) and command.expect_response == COMMAND_TIMEOUT_S
    assert list(alert.json()) == ["device", "temperature", "threshold", "ts"]
    assert (alert.qos, command.qos, alert.retain, command.retain) == (1, 1, False, False)
    assert (alert.command, command.command) == (False, True)
    assert alert.key == command.key == b"dev-1"  # the device id, from the topic level here
    assert (alert.result_id, command.result_id) == (
        "hot|dev-1|1000.0|fired",
        "hot|dev-1|1000.0|fired#1",
    )
    assert alert.agent == f"{APP_NAME}.{AGENT_NAME}" == "demo.telemetry"


def test_issued_at_is_the_wall_clock_by_default() -> None:
    before = time.time()
    outs = run_app(demo_app(cfg()), [reading("d", 40.0, 5.0)])
    assert before <= outs[1].json()["issued_at"] <= time.time()


def test_stats_payload_of_a_closed_window() -> None:
    outs = run(
        [
            reading("win-1", 21.0, 1000.5),
            reading("win-1", 25.0, 1004.0),
            reading("win-1", 23.0, 1009.5),
            reading("win-1", 22.0, 1012.5),  # past end 1010 + grace 2: the window closes
        ]
    )
    (stats,) = outs
    assert (stats.kind, stats.topic, stats.qos, stats.key) == (
        "mqtt", "sensors/win-1/stats", 1, b"win-1",
    )  # fmt: skip
    body = stats.json()
    assert list(body) == ["device", "window_start", "window_end", "count", "mean", "min", "max"]
    assert body == {
        "device": "win-1", "window_start": 1000.0, "window_end": 1010.0, "count": 3,
        "mean": pytest.approx(23.0), "min": 21.0, "max": 25.0,
    }  # fmt: skip
    assert isinstance(body["window_start"], float) and isinstance(body["count"], int)
    assert stats.result_id == "win-1|1000.0|1010.0"
    assert stats.ingress_ts_ms is None


def test_the_record_key_is_the_device_over_the_topic_level() -> None:
    topic, payload = reading("other", 35.0, 1.0)
    outs = run([(topic, payload, "k-1")], advance_to=math.inf)
    assert [o.topic for o in outs] == ["alerts/k-1", "devices/k-1/commands", "sensors/k-1/stats"]
    assert all(o.key == b"k-1" for o in outs)
    assert outs[0].json()["device"] == outs[2].json()["device"] == "k-1"


def test_invalid_records_are_dead_lettered_and_the_next_valid_one_works() -> None:
    extra = json.dumps({"temperature": 1.0, "humidity": 1.0, "ts": 1.0, "x": 1}).encode()
    as_text = json.dumps({"temperature": "hot", "humidity": 1.0, "ts": 1.0}).encode()
    missing = json.dumps({"temperature": 1.0, "ts": 1.0}).encode()
    outs = run(
        [
            ("sensors/d/telemetry", b"not json{"),
            ("sensors/d/telemetry", extra),
            ("sensors/d/telemetry", as_text),
            ("sensors/d/telemetry", missing),
            reading("", 35.0, 2.0),  # sensors//telemetry without a key: no device id
            reading("d", 35.0, 3.0),
        ]
    )
    dead = [o for o in outs if o.kind == "deadletter"]
    assert [o.payload for o in dead] == [
        b"not json{", extra, as_text, missing, json.dumps(reading("", 35.0, 2.0)[1]).encode(),
    ]  # fmt: skip
    reasons = [o.reason for o in dead]
    assert "Invalid JSON" in reasons[0]
    assert "x: Extra inputs are not permitted" in reasons[1]
    assert reasons[2].startswith("temperature:")
    assert reasons[3].startswith("humidity: Field required")
    assert "no device id" in reasons[4]
    assert all("\n" not in r for r in reasons)
    assert {o.agent for o in dead} == {"demo.telemetry"}
    assert [o.topic for o in dead] == ["sensors/d/telemetry"] * 4 + ["sensors//telemetry"]
    assert [o.topic for o in outs if o.kind == "mqtt"] == ["alerts/d", "devices/d/commands"]


def rec(offset: int, dev: str, temperature: float, ts: float, *, topic: bool = True) -> Record:
    value = json.dumps({"temperature": temperature, "humidity": 40.0, "ts": ts}).encode()
    headers = [(H_INGRESS_TS, b"123")]
    if topic:
        headers.insert(0, (H_MQTT_TOPIC, f"sensors/{dev}/telemetry".encode()))
    return record("bayou.telemetry", 0, offset, dev.encode(), value, headers)


def engine(**update: Any) -> AppEngine:
    return AppEngine(demo_app(cfg(**update), clock=lambda: ISSUED_AT), lambda a: "bayou.telemetry")


async def test_alerts_and_commands_keep_the_ingress_time_stats_carry_none() -> None:
    e = engine()
    # Without an mqtt.topic header the record key alone names the device.
    outs = await e.process([rec(0, "d", 35.0, 100.0, topic=False)], None)
    outs += await e.advance(None, math.inf)
    assert [(o.topic, o.ingress_ts_ms) for o in outs] == [
        ("alerts/d", 123),
        ("devices/d/commands", 123),
        ("sensors/d/stats", None),
    ]


async def test_windows_and_cool_downs_survive_a_restart_and_input_is_folded_once() -> None:
    a = engine()
    batch = [rec(0, "d", 35.0, 101.0), rec(1, "d", 25.0, 102.0)]
    outs = await a.process(batch, None)
    outs += await a.advance(None)
    assert [o.topic for o in outs] == ["alerts/d", "devices/d/commands"]
    saved = a.state_changes()  # ...and the worker dies before it commits the input offsets

    b = engine()
    b.load(0, saved[0])
    # The batch again (skipped: already folded in), a hot reading inside the cool-down of the
    # alert at 101, and one after it.
    outs = await b.process([*batch, rec(2, "d", 36.0, 130.0), rec(3, "d", 36.0, 161.0)], None)
    outs += await b.advance(None)
    got = [(o.topic, o.json().get("ts"), o.json().get("count")) for o in outs]
    assert got == [
        ("alerts/d", 161.0, None),
        ("devices/d/commands", None, None),
        ("sensors/d/stats", None, 2),  # [100, 110): 101 and 102, each once
        ("sensors/d/stats", None, 1),  # [130, 140)
    ]
    assert outs[2].json()["mean"] == 30.0


def test_config_names_the_topic_threshold_window_and_cool_down() -> None:
    update = {"telemetry_topic": "plant.readings", "threshold": 25.0, "window_seconds": 60.0,
              "grace_seconds": 0.0, "alert_cooldown_seconds": 0.0}  # fmt: skip
    app = demo_app(cfg(**update))
    assert app.name == "demo"
    assert [(a.name, a.pattern.pattern, a.kafka_topic) for a in app.agents] == [
        ("telemetry", "sensors/{device}/telemetry", "plant.readings")
    ]
    outs = run(
        [reading("d", 26.0, 0.0), reading("d", 26.0, 0.5), reading("d", 10.0, 59.9)],
        advance_to=60.0,
        **update,
    )
    assert [o.topic for o in outs] == ["alerts/d", "devices/d/commands"] * 2 + ["sensors/d/stats"]
    assert outs[0].json()["threshold"] == 25.0
    stats = outs[-1].json()
    assert (stats["window_start"], stats["window_end"], stats["count"]) == (0.0, 60.0, 3)


def test_the_settings_create_the_demo_changelog_topic_compacted() -> None:
    from agents.runtime.store import changelog_topic
    from bayou.settings import DEMO_CHANGELOG_TOPIC

    assert DEMO_CHANGELOG_TOPIC == changelog_topic(APP_NAME)  # spelt out in the settings
    s = Settings()
    assert f"bayou.changelog.{APP_NAME}" in s.compacted_topics()
    assert f"bayou.changelog.{APP_NAME}" in s.all_topics()
