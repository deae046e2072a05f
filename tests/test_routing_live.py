"""Route rules from a file, on a real node: inbound keys and outbound (egress) rules."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from bayou.embedded import EmbeddedKafka
from bayou.processes import stop_process
from tests.conftest import start_ingress
from tests.helpers import Mqtt, read_topic

pytestmark = pytest.mark.integration

ROUTES = """
[[inbound]]
name = "plant"
mqtt = "plant/{site}/{machine}/status"
kafka_topic = "plant.status"
key = "{site}"

[[outbound]]
name = "erp"
kafka_topic = "erp.commands"
mqtt = "devices/{key}/commands"
qos = 1
"""


def test_routes_file_on_a_real_node(kafka: EmbeddedKafka, tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    node = start_ingress(kafka.bootstrap, tmp_path / "ingress.log", BAYOU_ROUTES_FILE=str(routes))
    try:
        dev = f"dev-{uuid.uuid4().hex[:6]}"
        c = Mqtt(node.mqtt_port, dev).connect()
        try:
            c.subscribe(f"devices/{dev}/commands", 1)
            # A record from a non-Bayou producer: no mqtt.topic header, only a key.
            p = Producer({"bootstrap.servers": kafka.bootstrap})
            p.produce("erp.commands", b'{"do": "stop"}', dev.encode())
            assert p.flush(10) == 0
            m = c.expect(lambda m: m.topic == f"devices/{dev}/commands")
            assert (m.payload, m.qos) == (b'{"do": "stop"}', 1)

            c.publish("plant/s1/m7/status", b"running", qos=1).wait_for_publish(10)
        finally:
            c.close()
        recs = read_topic(kafka.bootstrap, "plant.status")
        assert [(r.key, r.value) for r in recs] == [(b"s1", b"running")]
    finally:
        stop_process(node.proc)
