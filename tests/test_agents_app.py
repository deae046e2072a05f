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
from agents.app import App, AppError, Context, Out, Output, Pattern, load_apps
from agents.reducers import Count
from agents.runtime.engine import AppEngine, Record, record
from agents.runtime.store import AppStore, resolve_topic
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
    return record("hb", partition, offset, dev.encode(), json.dumps({"ts": ts}).encode(),
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


def counted(outs: list[Output]) -> list[tuple[str, float, int]]:
    return [
        (c["key"], c["start"], c["count"])
        for c in (o.json() for o in outs if o.topic.endswith("/count"))
    ]


async def test_each_partition_closes_its_windows_at_its_own_watermark() -> None:
    e = AppEngine(absence_app(), lambda _a: "hb")
    await e.process([rec(0, 0, "d0", 1.0), rec(1, 0, "d2", 1.5), rec(0, 1, "d1", 2.0)], None)
    await e.advance(None)
    # Partition 0 races ahead; partition 1's window [0, 10) stays open for its next reading.
    await e.process([rec(2, 0, "d0", 500.0)], None)
    outs = await e.advance(None)
    assert counted(outs) == [("d0", 0.0, 1), ("d2", 0.0, 1)]
    # Only d2's silence is over (at partition 0's time); d1's waits for partition 1's time.
    assert [o.json()["ev"] for o in outs if o.topic == "hb/alarm"] == ["silent|d2|31.5|fired"]
    assert e.watermark(0, None) == 500.0 and e.watermark(1, None) == 2.0
    await e.process([rec(1, 1, "d1", 3.0), rec(2, 1, "d1", 12.0)], None)
    assert counted(await e.advance(None)) == [("d1", 0.0, 2)]
    assert e.app.parts[("w", "n")].late == 0  # type: ignore[attr-defined]
    changes = e.state_changes()
    assert changes[0]['["m", "watermark"]'] == 500.0
    assert changes[1]['["m", "watermark"]'] == 12.0


async def test_wall_clock_moves_a_partition_watermark_only_when_idle_and_caught_up() -> None:
    e = AppEngine(absence_app(), lambda _a: "hb")
    await e.process([rec(0, 0, "d0", 1000.0)], 1000.0)
    assert await e.advance(1000.0, backlog={0}) == []
    assert await e.advance(1100.0, backlog={0}) == []  # a backlog: no idle advance
    assert e.watermark(0, 1100.0) == 1000.0
    assert await e.advance(1100.0) == []  # caught up: the idle advance starts now
    assert await e.advance(1105.0) == []
    assert e.watermark(0, 1105.0) == 1005.0
    assert counted(await e.advance(1110.0)) == [("d0", 1000.0, 1)]
    assert e.watermark(0, 1110.0) == 1010.0
    # Behind again: it stays where it got to.
    assert await e.advance(1200.0, backlog={0}) == []
    assert e.watermark(0, 1300.0) == 1010.0


async def test_a_restored_partition_keeps_its_own_watermark() -> None:
    a = AppEngine(absence_app(), lambda _a: "hb")
    await a.process([rec(0, 1, "d1", 2.0)], None)
    await a.advance(None)
    saved = a.state_changes()[1]
    # The survivor is far ahead on partition 0; partition 1 comes back at 2.0, its readings
    # that the previous owner never processed are not late.
    b = AppEngine(absence_app(), lambda _a: "hb")
    await b.process([rec(0, 0, "d0", 500.0)], None)
    await b.advance(None)
    b.load(1, saved)
    assert b.watermark(1, None) == 2.0 and b.watermark(0, None) == 500.0
    assert await b.advance(None) == []
    await b.process([rec(1, 1, "d1", 5.0), rec(2, 1, "d1", 11.0)], None)
    assert counted(await b.advance(None)) == [("d1", 0.0, 2)]


def test_table_put_refuses_a_non_json_value_naming_table_and_key() -> None:
    app = App("tbl")
    state = app.table("state")

    @app.agent("a/{dev}", kafka_topic="a")
    async def put(payload: bytes, ctx: Context) -> None:
        value: object = {"nan": float("nan")} if payload == b"nested" else float(payload)
        if payload == b"obj":
            value = object()
        state.put(ctx.key, value)
        ctx.publish("ok", payload)

    outs = run_app(app, [("a/d", b"1.5"), ("a/d", b"nan"), ("a/d", b"nested"), ("a/e", b"2")])
    assert [o.kind for o in outs] == ["mqtt", "deadletter", "deadletter", "mqtt"]
    assert "table 'state' key 'd'" in outs[1].reason and "nan" in outs[1].reason
    assert "AppError" in outs[2].reason and "not a JSON value" in outs[2].reason
    assert state.get("d") == 1.5 and state.get("e") == 2.0


def test_agent_topic_comes_from_the_route_rules_or_kafka_topic() -> None:
    spec = thermostat.app.agents[0]
    assert resolve_topic(spec, [("sensors/+/telemetry", "bayou.telemetry")]) == "bayou.telemetry"
    with pytest.raises(AppError, match=r"on_reading.*kafka_topic="):
        resolve_topic(spec, [("other/{x}", "t")])
    assert Pattern("a/{x}/+/#").filter == "a/+/+/#"
    assert Pattern("a/{x}").match("a/b/c") is None
    with pytest.raises(AppError):
        Pattern("a/#/b")


def test_patterns_match_as_the_broker_does_with_named_levels() -> None:
    assert Pattern("sensors/{device}/telemetry").match("sensors/d1/telemetry") == {"device": "d1"}
    assert Pattern("{site}/#").match("north/a/b") == {"site": "north"}
    assert Pattern("sensors/#").match("sensors") == {}
    # [MQTT-4.7.2-1]: a filter starting with a wildcard does not match a '$' topic.
    assert Pattern("{device}/x/telemetry").match("$SYS/x/telemetry") is None
    assert Pattern("+/x/telemetry").match("$SYS/x/telemetry") is None
    assert Pattern("#").match("$SYS/broker") is None
    assert Pattern("$SYS/{what}").match("$SYS/broker") == {"what": "broker"}
    with pytest.raises(AppError, match="not a valid MQTT topic pattern"):
        Pattern("a/b+c")


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


def test_a_callback_that_raises_dead_letters_its_result_and_the_others_go_on() -> None:
    app = App("cb_fail")
    win = app.window("w", Tumbling(10.0), {"n": Count()})

    @app.agent("sensors/{device}/telemetry")
    async def on_reading(_p: bytes, ctx: Context) -> None:
        win.add(ctx.key, float(json.loads(_p)["ts"]), 1.0)

    @win.on_close
    def publish(r: WindowResult, out: Out) -> None:
        out.publish(f"stats/{r.key}", r.as_dict())
        if r.key == "bad":
            raise KeyError("no such field")

    inputs = [
        ("sensors/bad/telemetry", {"ts": 1.0}),
        ("sensors/good/telemetry", {"ts": 2.0}),
    ]
    out = run_app(app, inputs, advance_to=math.inf)
    dead = [o for o in out if o.kind == "deadletter"]
    assert len(dead) == 1 and dead[0].callback and dead[0].key == b"bad"
    assert dead[0].reason == "publish raised KeyError: 'no such field'"
    assert dead[0].result_id == "bad|0.0|10.0" and dead[0].agent == "cb_fail.w"
    assert json.loads(dead[0].payload)["id"] == "bad|0.0|10.0"
    # The failing callback's own publish is dropped; the other key's result goes out.
    assert [o.topic for o in out if o.kind == "mqtt"] == ["stats/good"]


def test_a_callback_dead_letter_becomes_a_record_without_source_headers() -> None:
    from agents.runtime.batch import _to_record
    from agents.runtime.config import WorkerConfig

    o = Output("deadletter", "", b'{"id":"k|0.0|10.0"}', b"k", result_id="k|0.0|10.0",
               reason="publish raised KeyError: 'x'", agent="a.w", callback=True)  # fmt: skip
    topic, key, value, headers = _to_record(o, WorkerConfig(kafka_bootstrap="x:1"))
    assert (topic, key, value) == ("bayou.deadletter", b"k", b'{"id":"k|0.0|10.0"}')
    assert dict(headers) == {
        "bayou.error": b"publish raised KeyError: 'x'",
        "bayou.agent": b"a.w",
        "bayou.result_id": b"k|0.0|10.0",
    }
