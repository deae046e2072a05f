"""The demo agent's logic over fake records, without a broker (state in a real RocksDB dir)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from agents.config import WorkerConfig
from agents.demo import DemoAgent, OutRecord
from agents.state import StateStore
from ingress.contract import H_DEADLETTER_REASON, H_INGRESS_TS, H_MQTT_TOPIC


@dataclass
class Rec:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "bayou.telemetry"
    partition: int = 0


def reading(offset: int, device: str, temp: float, ts: float) -> Rec:
    body = json.dumps({"temperature": temp, "humidity": 50.0, "ts": ts}).encode()
    hdrs = [(H_MQTT_TOPIC, f"sensors/{device}/telemetry".encode()), (H_INGRESS_TS, b"123")]
    return Rec(offset, device.encode(), body, hdrs)


def cfg(tmp_path: Path) -> WorkerConfig:
    return WorkerConfig(kafka_bootstrap="unused:9", state_dir=tmp_path, metrics_port=None)


def mqtt_topics(outs: list[OutRecord]) -> list[str]:
    return [dict(o.headers)[H_MQTT_TOPIC].decode() for o in outs]


def test_device_falls_back_to_topic_level_and_alert_keeps_ingress_ts(tmp_path: Path) -> None:
    agent = DemoAgent(cfg(tmp_path), None, wall_now=1000.0)
    rec = reading(0, "dev-9", 31.0, 1000.0)
    rec.key = None
    res = agent.process([rec], wall_now=1000.0)
    assert mqtt_topics(res.outputs) == ["alerts/dev-9", "devices/dev-9/commands"]
    assert all(o.key == b"dev-9" for o in res.outputs)
    assert all(dict(o.headers)[H_INGRESS_TS] == b"123" for o in res.outputs)
    assert json.loads(res.outputs[1].value or b"")["issued_at"] == 1000.0


def test_no_device_id_and_extra_fields_are_dead_lettered(tmp_path: Path) -> None:
    agent = DemoAgent(cfg(tmp_path), None, wall_now=0.0)
    extra = b'{"temperature": 1.0, "humidity": 1.0, "ts": 1.0, "x": 1}'
    res = agent.process([Rec(0, None, b"{}"), Rec(1, b"d", extra), Rec(2, b"d", None)], 0.0)
    assert res.dead_letters == 3
    reasons = [dict(o.headers)[H_DEADLETTER_REASON] for o in res.outputs]
    assert reasons[0] == b"no device id"
    assert b"x: Extra inputs are not permitted" in reasons[1]
    assert reasons[2] == b"empty record value"
    assert [o.value for o in res.outputs] == [b"{}", extra, None]


def test_idle_wall_clock_closes_windows_and_late_events_are_counted(tmp_path: Path) -> None:
    agent = DemoAgent(cfg(tmp_path), None, wall_now=5000.0)
    res = agent.process([reading(0, "d", 20.0, 5001.0)], wall_now=5001.0)
    assert res.windows == 0
    assert agent.tick(5011.9).windows == 0  # end 5010 + grace 2 not yet reached
    res = agent.tick(5012.0)
    assert mqtt_topics(res.outputs) == ["sensors/d/stats"]
    res = agent.process([reading(1, "d", 20.0, 5009.0)], wall_now=5012.5)
    assert (res.late, res.windows, res.outputs) == (1, 0, [])


def test_future_clock_does_not_close_other_windows(tmp_path: Path) -> None:
    config = cfg(tmp_path).model_copy(update={"max_clock_skew_seconds": 5.0})
    agent = DemoAgent(config, None, wall_now=100.0)
    agent.process([reading(0, "a", 20.0, 101.0)], wall_now=101.0)
    res = agent.process([reading(1, "b", 20.0, 1e10)], wall_now=101.0)
    assert res.windows == 0  # b's clock counts as wall + 5 s: a's window (end 110) stays open
    assert agent.watermark(101.0) == 106.0


def test_restart_keeps_windows_and_skips_records_already_folded(tmp_path: Path) -> None:
    config = cfg(tmp_path)
    store = StateStore(tmp_path / "demo")
    agent = DemoAgent(config, store, wall_now=100.0)
    batch = [reading(0, "d", 35.0, 101.0), reading(1, "d", 25.0, 102.0)]
    assert agent.process(batch, wall_now=102.0).alerts == 1
    agent.flush()  # ...and the worker dies before it commits the offsets
    store.close()

    store = StateStore(tmp_path / "demo")
    try:
        agent = DemoAgent(config, store, wall_now=103.0)
        res = agent.process([*batch, reading(2, "d", 30.0, 112.0)], wall_now=103.0)
        assert res.skipped == 2 and res.alerts == 0
        (stats,) = res.outputs
        assert json.loads(stats.value or b"")["count"] == 2
        agent.flush()
        assert list(store.load_windows()) == [("d", 110.0)]  # only the new window is open
        assert store.load_offsets() == {("bayou.telemetry", 0): 3}
    finally:
        store.close()
