"""The demo pipeline end to end: MQTT device → ingress → Kafka → worker → Kafka → MQTT."""

from __future__ import annotations

import json
import math
import time
import uuid

import pytest

from bayou.embedded import EmbeddedKafka
from tests.conftest import Proc
from tests.helpers import Mqtt, headers, read_topic

pytestmark = pytest.mark.integration


def _dev() -> str:
    return f"dev-{uuid.uuid4().hex[:8]}"


def _reading(temperature: float, ts: float | None = None) -> bytes:
    return json.dumps(
        {"temperature": temperature, "humidity": 40.0, "ts": time.time() if ts is None else ts}
    ).encode()


def test_hot_reading_alerts_and_commands_the_device(ingress: Proc, worker: Proc) -> None:
    dev = _dev()
    device = Mqtt(ingress.mqtt_port, dev).connect()
    watcher = Mqtt(ingress.mqtt_port, f"watch-{dev}").connect()
    try:
        device.subscribe(f"devices/{dev}/commands", 1)
        watcher.subscribe(f"alerts/{dev}", 1)
        device.publish(f"sensors/{dev}/telemetry", _reading(36.5)).wait_for_publish(10)

        cmd = device.expect(lambda m: m.topic == f"devices/{dev}/commands")
        body = json.loads(cmd.payload)
        assert cmd.qos == 1
        assert {k: body[k] for k in ("command", "device", "reason")} == {
            "command": "cool", "device": dev, "reason": "temperature",
        }  # fmt: skip
        assert abs(body["issued_at"] - time.time()) < 30

        alert = json.loads(watcher.expect(lambda m: m.topic == f"alerts/{dev}").payload)
        assert (alert["device"], alert["temperature"], alert["threshold"]) == (dev, 36.5, 30.0)

        # A second hot reading inside the 60 s cool-down sends no second command.
        device.publish(f"sensors/{dev}/telemetry", _reading(37.0)).wait_for_publish(10)
        with pytest.raises(TimeoutError):
            device.expect(lambda m: m.topic == f"devices/{dev}/commands", timeout=3)
    finally:
        device.close()
        watcher.close()


def test_a_device_that_stays_hot_is_commanded_again_one_cool_down_later(
    ingress: Proc, worker: Proc
) -> None:
    dev = _dev()
    # Event times in the past: they move no partition's watermark ahead of the other tests'.
    first = time.time() - 200
    device = Mqtt(ingress.mqtt_port, dev).connect()
    try:
        device.subscribe(f"devices/{dev}/commands", 1)
        for ts in (first, first + 30, first + 60):  # 30 s: inside the 60 s cool-down
            device.publish(f"sensors/{dev}/telemetry", _reading(33.0, ts)).wait_for_publish(10)
        device.expect(lambda m: m.topic == f"devices/{dev}/commands")
        device.expect(lambda m: m.topic == f"devices/{dev}/commands")
        with pytest.raises(TimeoutError):
            device.expect(lambda m: m.topic == f"devices/{dev}/commands", timeout=3)
    finally:
        device.close()


def test_stats_arrive_when_the_window_closes(ingress: Proc, worker: Proc) -> None:
    dev = _dev()
    # A window a minute ahead of now, so no other test's readings share or close it early.
    start = math.ceil(time.time() / 10) * 10 + 60
    device = Mqtt(ingress.mqtt_port, dev).connect()
    try:
        device.subscribe(f"sensors/{dev}/stats", 1)
        for temp, offset in ((20.0, 1), (22.0, 4), (27.0, 9)):
            device.publish(f"sensors/{dev}/telemetry", _reading(temp, start + offset))
        # Event time past end + grace (2 s) closes the window.
        device.publish(f"sensors/{dev}/telemetry", _reading(21.0, start + 13)).wait_for_publish(10)
        stats = json.loads(device.expect(lambda m: m.topic == f"sensors/{dev}/stats").payload)
        assert stats == {
            "device": dev, "window_start": start, "window_end": start + 10, "count": 3,
            "mean": 23.0, "min": 20.0, "max": 27.0,
        }  # fmt: skip
    finally:
        device.close()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [(b"not json{", "JSON"), (b'{"temperature": "hot", "humidity": 1, "ts": 1}', "temperature")],
)
def test_invalid_payload_is_dead_lettered_and_the_next_valid_one_works(
    kafka: EmbeddedKafka, ingress: Proc, worker: Proc, bad: bytes, reason: str
) -> None:
    dev = _dev()
    device = Mqtt(ingress.mqtt_port, dev).connect()
    try:
        device.subscribe(f"devices/{dev}/commands", 1)
        device.publish(f"sensors/{dev}/telemetry", bad).wait_for_publish(10)
        device.publish(f"sensors/{dev}/telemetry", _reading(40.0)).wait_for_publish(10)
        device.expect(lambda m: m.topic == f"devices/{dev}/commands")
    finally:
        device.close()
    dead = [
        r
        for r in read_topic(kafka.bootstrap, "bayou.deadletter")
        if headers(r).get("mqtt.topic") == f"sensors/{dev}/telemetry".encode()
    ]
    assert len(dead) == 1
    assert dead[0].value == bad
    h = headers(dead[0])
    assert reason.lower() in h["bayou.error"].decode().lower()
    assert h["bayou.source_topic"] == b"bayou.telemetry"
    assert h["bayou.agent"] == b"demo.telemetry"
    assert worker.proc.poll() is None
