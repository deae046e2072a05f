"""Retained messages (MQTT 3.1.1 §3.3.1.3), stored in the compacted Kafka topic bayou.retained."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.processes import stop_process
from tests.conftest import Proc, start_ingress
from tests.helpers import Mqtt, headers, read_topic

pytestmark = pytest.mark.integration


def _t() -> str:
    return f"ret/{uuid.uuid4().hex[:8]}"


def _publish(port: int, topic: str, payload: bytes, qos: int = 1) -> None:
    pub = Mqtt(port, f"pub-{uuid.uuid4().hex[:6]}").connect()
    try:
        pub.client.publish(topic, payload, qos=qos, retain=True).wait_for_publish(10)
    finally:
        pub.close()


def test_mqtt_3_3_1_6_retained_sent_on_subscribe_with_wildcards_and_qos(ingress: Proc) -> None:
    base = _t()
    _publish(ingress.mqtt_port, f"{base}/a", b"A", qos=1)
    _publish(ingress.mqtt_port, f"{base}/b/c", b"BC", qos=0)
    sub = Mqtt(ingress.mqtt_port, f"s-{uuid.uuid4().hex[:6]}").connect()
    try:
        sub.subscribe(f"{base}/#", 1)
        msgs = [sub.expect(), sub.expect()]
        by_topic = {m.topic: m for m in msgs}
        assert by_topic[f"{base}/a"].payload == b"A"
        assert by_topic[f"{base}/a"].retain is True
        assert by_topic[f"{base}/a"].qos == 1
        assert by_topic[f"{base}/b/c"].qos == 0  # min(message QoS 0, granted 1)
        exact = Mqtt(ingress.mqtt_port, f"e-{uuid.uuid4().hex[:6]}").connect()
        try:
            exact.subscribe(f"{base}/b/+", 0)
            m = exact.expect()
            assert (m.topic, m.payload, m.retain) == (f"{base}/b/c", b"BC", True)
        finally:
            exact.close()
    finally:
        sub.close()


def test_mqtt_3_3_1_9_live_delivery_has_retain_flag_cleared(ingress: Proc) -> None:
    topic = _t()
    sub = Mqtt(ingress.mqtt_port, f"s-{uuid.uuid4().hex[:6]}").connect()
    try:
        sub.subscribe(topic, 1)
        _publish(ingress.mqtt_port, topic, b"live")
        m = sub.expect(lambda m: m.topic == topic)
        assert (m.payload, m.retain) == (b"live", False)
    finally:
        sub.close()


def test_mqtt_3_3_1_10_empty_retained_publish_clears_it(
    kafka: EmbeddedKafka, ingress: Proc
) -> None:
    topic = _t()
    _publish(ingress.mqtt_port, topic, b"old")
    _publish(ingress.mqtt_port, topic, b"")
    sub = Mqtt(ingress.mqtt_port, f"s-{uuid.uuid4().hex[:6]}").connect()
    try:
        sub.subscribe(topic, 1)
        with pytest.raises(TimeoutError):
            sub.expect(lambda m: m.topic == topic, timeout=1.5)
    finally:
        sub.close()
    recs = [r for r in read_topic(kafka.bootstrap, "bayou.retained") if r.key == topic.encode()]
    assert [r.value for r in recs] == [b"old", None]  # the clear is a tombstone
    assert headers(recs[0])["mqtt.topic"] == topic.encode()


def test_retained_is_the_same_on_every_node_and_survives_restarting_them(
    kafka: EmbeddedKafka, ingress: Proc, tmp_path: Path
) -> None:
    topic = _t()
    _publish(ingress.mqtt_port, topic, b"kept", qos=1)
    other = start_ingress(kafka.bootstrap, tmp_path / "b.log")
    try:
        sub = Mqtt(other.mqtt_port, f"s-{uuid.uuid4().hex[:6]}").connect()
        try:
            sub.subscribe(topic, 1)
            assert sub.expect(lambda m: m.topic == topic).payload == b"kept"
        finally:
            sub.close()
    finally:
        stop_process(other.proc)
    # A node started after every node that saw the publish has stopped still has it.
    fresh = start_ingress(kafka.bootstrap, tmp_path / "c.log")
    try:
        sub = Mqtt(fresh.mqtt_port, f"s-{uuid.uuid4().hex[:6]}").connect()
        try:
            sub.subscribe(topic, 1)
            m = sub.expect(lambda m: m.topic == topic)
            assert (m.payload, m.retain) == (b"kept", True)
        finally:
            sub.close()
    finally:
        stop_process(fresh.proc)


def test_retained_publish_on_one_node_reaches_a_subscriber_on_another(
    kafka: EmbeddedKafka, ingress: Proc, tmp_path: Path
) -> None:
    other = start_ingress(kafka.bootstrap, tmp_path / "b.log")
    try:
        topic = _t()
        _publish(ingress.mqtt_port, topic, b"cross")
        deadline = time.monotonic() + 10
        while True:  # the other node applies it when its reader gets there (milliseconds)
            sub = Mqtt(other.mqtt_port, f"s-{uuid.uuid4().hex[:6]}").connect()
            try:
                sub.subscribe(topic, 1)
                try:
                    assert sub.expect(lambda m: m.topic == topic, timeout=1).payload == b"cross"
                    break
                except TimeoutError:
                    assert time.monotonic() < deadline, "never reached the other node"
            finally:
                sub.close()
    finally:
        stop_process(other.proc)
