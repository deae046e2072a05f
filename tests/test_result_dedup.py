"""Agent results with the same bayou.result_id reach a device once."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from bayou.embedded import EmbeddedKafka
from ingress.outbound.dedup import ResultDedup
from tests.conftest import Proc
from tests.helpers import Mqtt


def test_same_id_from_another_record_is_a_duplicate() -> None:
    d = ResultDedup(capacity=2)
    h = [("bayou.result_id", b"dev|0|10")]
    assert not d.is_duplicate(h, ("t", 0, 5))
    assert d.is_duplicate(h, ("t", 0, 9))  # produced again after a rebalance
    assert not d.is_duplicate(h, ("t", 0, 5))  # the same record read again (a catch-up)
    assert not d.is_duplicate([], ("t", 0, 9))  # no id: never a duplicate


def test_capacity_bounds_memory() -> None:
    d = ResultDedup(capacity=2)
    for i in range(3):
        assert not d.is_duplicate([("bayou.result_id", str(i).encode())], ("t", 0, i))
    # The oldest id was forgotten: memory stays bounded, at the cost of old duplicates.
    assert not d.is_duplicate([("bayou.result_id", b"0")], ("t", 0, 99))


@pytest.mark.integration
def test_duplicate_result_is_dropped_before_the_device(kafka: EmbeddedKafka, ingress: Proc) -> None:
    dev = f"dev-{uuid.uuid4().hex[:6]}"
    topic = f"devices/{dev}/commands"
    c = Mqtt(ingress.mqtt_port, dev).connect()
    try:
        c.subscribe(topic, 1)
        p = Producer({"bootstrap.servers": kafka.bootstrap})
        headers = [("mqtt.topic", topic.encode()), ("mqtt.qos", b"1")]
        for payload, rid in ((b"first", b"r1"), (b"again", b"r1"), (b"other", b"r2")):
            p.produce("bayou.outbound", payload, dev.encode(),
                      headers=[*headers, ("bayou.result_id", rid)])  # fmt: skip
        assert p.flush(10) == 0
        assert c.expect(lambda m: m.topic == topic).payload == b"first"
        assert c.expect(lambda m: m.topic == topic).payload == b"other"
        with pytest.raises(TimeoutError):
            c.expect(lambda m: m.topic == topic, timeout=1)
    finally:
        c.close()
