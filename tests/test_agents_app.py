"""The data-team API (agents.app) through agents.testing.run_app: no broker, pure and fast."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from agents.alerting import Absence, AlertRule
from agents.app import App, AppError, Context, Out, Pattern, load_apps
from agents.app_core import AppEngine, Record
from agents.app_runtime import AppStore, resolve_topic
from agents.reducers import Count
from agents.testing import run_app
from agents.windowing import Tumbling, WindowResult
from ingress.contract import H_MQTT_TOPIC
from tests.agent_examples import thermostat
from tests.conftest import BAYOU, bayou_env

T = "sensors/{}/telemetry"


def reading(dev: str, temperature: float, ts: float) -> tuple[str, dict[str, float]]:
    return T.format(dev), {"temperature": temperature, "ts": ts}


def test_thermostat_alerts_commands_stats_and_dead_letters() -> None:
    outs = run_app(
        thermostat.app,
        [
            reading("d1", 31.0, 61.0),
            (T.format("d1"), b"not json"),
            (T.format("d1"), {"temperature": "hot", "ts": 62.0}),
            reading("d1", 20.0, 70.0),
            reading("d2", 25.0, 65.0),
        ],
        advance_to=math.inf,
    )
    got = [(o.kind, o.topic, o.result_id) for o in outs]
    assert got == [
        ("mqtt", "alerts/d1", "hot|d1|61.0|fired"),
        ("mqtt", "devices/d1/commands", "run_app/0/0"),
        ("deadletter", T.format("d1"), "run_app/0/1"),
        ("deadletter", T.format("d1"), "run_app/0/2"),
        ("mqtt", "alerts/d1", "hot|d1|61.0|resolved"),
        ("mqtt", "sensors/d1/stats", "d1|60.0|120.0"),
        ("mqtt", "sensors/d2/stats", "d2|60.0|120.0"),
    ]
    assert outs[1].qos == 1 and outs[1].json() == {"command": "cool"} and outs[1].key == b"d1"
    assert outs[2].payload == b"not json" and "Invalid JSON" in outs[2].reason
    assert outs[3].reason.startswith("temperature:")
    assert outs[3].agent == "thermostat.on_reading"
    stats = outs[5].json()
    assert stats["count"] == 2 and stats["values"] == {"n": 2, "mean": 25.5, "max": 31.0}
    assert stats["last"] == {"temperature": 20.0, "ts": 70.0}  # from the device-state table


def test_windows_close_at_the_event_time_watermark_and_run_app_starts_fresh() -> None:
    inputs = [reading("d1", 20.0, 1.0), reading("d1", 22.0, 59.0)]
    assert [o.topic for o in run_app(thermostat.app, inputs)] == []  # no watermark past 65
    closing = [*inputs, reading("d1", 10.0, 65.0)]  # 60 + grace 5
    (stats,) = run_app(thermostat.app, closing)
    assert stats.json()["count"] == 2  # the previous run's state did not leak in


def test_patterns_keys_and_agent_errors() -> None:
    app = App("t1")
    seen: list[tuple[str, dict[str, str], bytes]] = []

    @app.agent("plant/+/line/{line}/#", kafka_topic="plant")
    async def raw(payload: bytes, ctx: Context) -> None:
        seen.append((ctx.key, ctx.params, payload))
        if payload == b"boom":
            ctx.publish("never", b"x")
            raise RuntimeError("boom\nsecond line")
        ctx.produce("other.topic", {"n": 1})

    outs = run_app(
        app,
        [
            ("plant/p1/line/7/a/b", b"ok"),
            ("plant/p1/line/8/x", b"ok", "explicit"),
            ("plant/p1/other/8", b"ignored"),
            ("plant/p1/line/9/z", b"boom"),
        ],
    )
    assert seen[:2] == [("7", {"line": "7"}, b"ok"), ("explicit", {"line": "8"}, b"ok")]
    assert [(o.kind, o.topic, o.key) for o in outs] == [
        ("kafka", "other.topic", b"7"),
        ("kafka", "other.topic", b"explicit"),
        ("deadletter", "plant/p1/line/9/z", None),
    ]
    assert outs[2].reason == "agent raised RuntimeError: boom second line"


def test_result_ids_repeat_with_a_suffix() -> None:
    app = App("ids")

    @app.agent("a/{dev}", kafka_topic="a")
    async def twice(payload: bytes, ctx: Context) -> None:
        ctx.publish("x", b"1")
        ctx.publish("y", b"2")
        ctx.publish("z", {"id": "mine"})
        ctx.command("c", b"3", result_id="given")

    outs = run_app(app, [("a/d", b"")])
    assert [o.result_id for o in outs] == ["run_app/0/0", "run_app/0/0#1", "mine", "given"]


class Beat(BaseModel):
    ts: float


def absence_app() -> App:
    app = App("watchdog")
    silent = app.alerter(AlertRule("silent", Absence(seconds=30)))
    counts = app.window("n", Tumbling(10), {"n": Count()})

    @app.agent("hb/{dev}", model=Beat, event_time="ts", kafka_topic="hb")
    async def beat(b: Beat, ctx: Context) -> None:
        silent.observe(ctx.key, ctx.ts, 1.0)
        counts.add(ctx.key, ctx.ts, 1.0)

    @silent.on_event
    def on_silent(ev: object, out: Out) -> None:
        out.command("hb/alarm", {"ev": getattr(ev, "id", "")})

    @counts.on_close
    def on_close(r: WindowResult, out: Out) -> None:
        out.publish(f"hb/{r.key}/count", r.as_dict())

    return app


def test_absence_fires_from_time_passing() -> None:
    app = absence_app()
    outs = run_app(app, [("hb/d1", {"ts": 5.0}), ("hb/d2", {"ts": 20.0})], advance_to=40.0)
    assert [(o.topic, o.result_id) for o in outs] == [
        ("hb/d1/count", "d1|0.0|10.0"),
        ("hb/alarm", "silent|d1|35.0|fired"),
        ("hb/d2/count", "d2|20.0|30.0"),
    ]


def rec(offset: int, partition: int, dev: str, ts: float) -> Record:
    return Record("hb", partition, offset, dev.encode(), json.dumps({"ts": ts}).encode(),
                  [(H_MQTT_TOPIC, f"hb/{dev}".encode())])  # fmt: skip


async def test_state_moves_between_engines_per_partition_and_skips_folded_input() -> None:
    a = AppEngine(absence_app(), lambda _a: "hb")
    await a.process([rec(0, 0, "d0", 1.0), rec(0, 1, "d1", 2.0), rec(1, 1, "d1", 3.0)], None)
    await a.advance(None)
    changes = a.state_changes()
    assert sorted(changes) == [0, 1]
    assert changes[1]['["o","hb"]'] == 2
    # A second worker restores partition 1 only, then gets input 1 again (a redelivery) and 2.
    b = AppEngine(absence_app(), lambda _a: "hb")
    b.load(1, changes[1])
    outs = await b.process([rec(1, 1, "d1", 3.0), rec(2, 1, "d1", 4.0)], None)
    outs += await b.advance(None, 100.0)
    counts = [o.json() for o in outs if o.topic.endswith("/count")]
    assert [(c["key"], c["count"]) for c in counts] == [("d1", 3)]  # 2, 3 and 4; 3 once
    # Dropping a partition forgets its keys.
    a.drop({1})
    outs = await a.advance(None, 100.0)
    assert [o.json()["key"] for o in outs if o.topic.endswith("/count")] == ["d0"]


def test_agent_topic_comes_from_the_route_rules_or_kafka_topic() -> None:
    spec = thermostat.app.agents[0]
    assert resolve_topic(spec, [("sensors/+/telemetry", "bayou.telemetry")]) == "bayou.telemetry"
    with pytest.raises(AppError, match=r"on_reading.*kafka_topic="):
        resolve_topic(spec, [("other/{x}", "t")])
    assert Pattern("a/{x}/+/#").filter == "a/+/+/#"
    assert Pattern("a/{x}").match("a/b/c") is None
    with pytest.raises(AppError):
        Pattern("a/#/b")


def test_definition_errors_and_loading_modules() -> None:
    app = App("x")
    app.table("t")
    with pytest.raises(AppError, match="already has"):
        app.table("t")
    with pytest.raises(AppError, match="app name"):
        App("bad name")
    with pytest.raises(AppError, match="event_time"):
        app.agent("a", model=Beat, event_time="nope")
    assert [a.name for a in load_apps(["tests.agent_examples.thermostat"])] == ["thermostat"]
    with pytest.raises(AppError, match="defines no"):
        load_apps(["tests.agent_examples"])


def test_worker_with_an_unknown_agents_module_says_so() -> None:
    env = bayou_env(BAYOU_KAFKA_BOOTSTRAP="127.0.0.1:1", BAYOU_WORKER_METRICS_PORT="0")
    res = subprocess.run(
        [*BAYOU, "worker", "--agents", "no_such_module_x"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2
    assert "bayou worker: No module named 'no_such_module_x'" in res.stderr


def test_loading_an_app_without_agents_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty_app_mod.py").write_text("from agents.app import App\napp = App('e')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    with pytest.raises(AppError, match="'e' in module 'empty_app_mod' has no agents"):
        load_apps(["empty_app_mod"])  # found through the current directory
    sys.modules.pop("empty_app_mod", None)


def test_app_store_keeps_entries_per_partition_with_deletes(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "s")
    store.write({0: {'["t","x","a"]': {"v": 1}}, 1: {'["t","x","b"]': 2}}, {0: 5})
    store.write({0: {'["t","x","a"]': None, '["t","x","c"]': 3}}, {0: 7})
    assert store.load(0) == ({'["t","x","c"]': 3}, 7)
    assert store.load(1) == ({'["t","x","b"]': 2}, 0)
    assert store.load(2) == ({}, 0)
    store.close()
