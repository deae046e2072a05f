"""QoS 1 is acknowledged only once Kafka has the record: pause the broker, then resume it.

The embedded broker is paused with SIGSTOP rather than killed: a restarted memory broker
would come back empty (DESIGN §10).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.processes import stop_process
from tests.conftest import Proc, start_ingress, start_kafka
from tests.helpers import Mqtt, read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[tuple[EmbeddedKafka, Proc]]:
    kafka = start_kafka(tmp_path / "tansu.log")
    try:
        node = start_ingress(kafka.bootstrap, tmp_path / "ingress.log")
    except BaseException:
        kafka.stop()
        raise
    yield kafka, node
    assert kafka.pid is not None
    os.kill(kafka.pid, signal.SIGCONT)  # never leave it stopped, even if the test failed
    stop_process(node.proc)
    kafka.stop()


def test_qos1_not_acknowledged_while_kafka_is_down_and_delivered_after(
    own_stack: tuple[EmbeddedKafka, Proc],
) -> None:
    kafka, node = own_stack
    assert kafka.pid is not None
    sub = Mqtt(node.mqtt_port, "outage-sub").connect()
    pub = Mqtt(node.mqtt_port, "outage-pub").connect()
    try:
        sub.subscribe("sensors/#", 1)
        os.kill(kafka.pid, signal.SIGSTOP)
        info = pub.publish("sensors/d-out/telemetry", b"while-down", qos=1)
        time.sleep(3)  # nothing must come: a PUBACK now would not be backed by Kafka
        assert not info.is_published(), "PUBACK sent while Kafka could not have the record"
        os.kill(kafka.pid, signal.SIGCONT)
        info.wait_for_publish(40)
        assert info.is_published()
        got = sub.expect(lambda m: m.topic == "sensors/d-out/telemetry", timeout=30)
        assert got.payload == b"while-down"
    finally:
        os.kill(kafka.pid, signal.SIGCONT)
        sub.close()
        pub.close()
    values = [r.value for r in read_topic(kafka.bootstrap, "bayou.telemetry")]
    assert values.count(b"while-down") == 1
    assert node.proc.poll() is None
