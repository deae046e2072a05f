"""The agent worker's metric helpers without Kafka: the dead-letter reason of each path, device
groups (bounded), and the consumer-lag series (throttled values, removed at once on revoke).

On real processes the whole contract is checked by tests/test_metrics_contract.py.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from agents import App, Context, Count, Out, Tumbling, WindowResult
from agents.app import MAX_DEVICE_GROUPS
from agents.runtime import metrics
from agents.runtime.engine import AppEngine, record
from ingress.contract import H_MQTT_TOPIC


class Reading(BaseModel):
    temperature: float
    ts: float


def _app() -> App:
    app = App("reasons")
    win = app.window("w", Tumbling(10.0), {"n": Count()})

    @app.agent("sensors/{device}/telemetry", model=Reading, event_time="ts", name="t")
    async def on_reading(r: Reading, ctx: Context) -> None:
        if r.temperature < 0:
            raise ValueError("below zero")
        win.add(ctx.key, ctx.ts, r.temperature)

    @win.on_close
    def closed(w: WindowResult, out: Out) -> None:
        raise RuntimeError("on_close fails")

    return app


async def test_every_dead_letter_path_has_its_reason_from_the_fixed_set() -> None:
    engine = AppEngine(_app(), lambda _agent: "in")
    topic = [(H_MQTT_TOPIC, b"sensors/d1/telemetry")]
    ok = json.dumps({"temperature": 1.0, "ts": 1.0}).encode()
    inputs: list[tuple[bytes | None, bytes | None]] = [
        (b"\xff\xfe", ok),  # bad_key
        (b"d1", None),  # empty_value
        (b"d1", b"not json"),  # invalid
        (b"d1", b'{"temperature": "hot", "ts": 1.0}'),  # invalid (the model)
        (b"d1", b'{"temperature": 1.0, "ts": Infinity}'),  # bad_event_time
        (b"d1", json.dumps({"temperature": -1.0, "ts": 2.0}).encode()),  # agent_error
        (b"d1", ok),  # folded; its window closes with the next reading: callback_error
        (b"d1", json.dumps({"temperature": 1.0, "ts": 25.0}).encode()),
    ]
    outputs = []
    for i, (key, value) in enumerate(inputs):
        outputs += await engine.process([record("in", 0, i, key, value, topic)], None)
        outputs += await engine.advance(None)
    dead = [o for o in outputs if o.kind == "deadletter"]
    codes = [o.reason_code for o in dead]
    assert codes == [
        "bad_key", "empty_value", "invalid", "invalid", "bad_event_time", "agent_error",
        "callback_error",
    ], [(o.reason_code, o.reason) for o in dead]  # fmt: skip
    assert set(codes) <= set(metrics.DEAD_LETTER_REASONS)
    # The label is the code, the text stays in the record's header only.
    assert all(o.reason and o.reason != o.reason_code for o in dead)
    assert {o.agent for o in dead} == {"reasons.t", "reasons.w"}
    assert engine.counts.taken == {"t": len(inputs)}
    assert engine.counts.closed == {"w": 1}


def test_device_groups_default_to_all() -> None:
    assert App("plain").group_of("dev-1") == "all"


def test_device_groups_are_bounded_and_the_rest_count_as_other() -> None:
    app = App("many", device_group=lambda device: device)  # one group per device: unbounded
    kept = [app.group_of(f"dev-{n}") for n in range(MAX_DEVICE_GROUPS)]
    assert kept == [f"dev-{n}" for n in range(MAX_DEVICE_GROUPS)]
    assert app.group_of("dev-new") == "other"
    assert app.group_of("dev-3") == "dev-3"  # a group already kept stays


def test_a_device_group_function_that_raises_counts_as_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def group(device: str) -> str:
        raise KeyError(device)

    app = App("broken", device_group=group)
    assert app.group_of("a") == "other" and app.group_of("b") == "other"
    assert sum("device_group" in r.getMessage() for r in caplog.records) == 1


def _lag(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(
        "bayou_agent_consumer_lag", {"topic": topic, "partition": str(partition)}
    )


def test_lag_values_at_most_once_a_second_and_a_revoked_partition_leaves_at_once() -> None:
    now = [1000.0]
    t = "lag-test"
    lag = metrics.LagMetric(clock=lambda: now[0])
    lag.update({(t, 0): 5, (t, 1): 0}, {(t, 0), (t, 1)})
    assert (_lag(t, 0), _lag(t, 1)) == (5, 0)

    now[0] += 0.5  # within the second: the values stay
    lag.update({(t, 0): 2, (t, 1): 7}, {(t, 0), (t, 1)})
    assert (_lag(t, 0), _lag(t, 1)) == (5, 0)

    now[0] += 0.1  # partition 1 revoked: its series goes now, not at the next second
    lag.update({(t, 0): 1}, {(t, 0)})
    assert (_lag(t, 0), _lag(t, 1)) == (5, None)

    now[0] += 1.0  # a partition whose position is not known yet keeps its last value
    lag.update({(t, 2): 3}, {(t, 0), (t, 2)})
    assert (_lag(t, 0), _lag(t, 2)) == (5, 3)

    lag.clear()
    assert (_lag(t, 0), _lag(t, 2)) == (None, None)
