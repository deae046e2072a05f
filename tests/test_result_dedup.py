"""Agent results with the same bayou.result_id reach a device once."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from bayou.embedded import EmbeddedKafka
from ingress.outbound.dedup import ResultDedup
from ingress.outbound.send import Sender
from ingress.routing.rules import EgressRouter
from kafkaio.reader import Record
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


def test_a_client_record_with_a_result_id_suppresses_no_result() -> None:
    """A record from an MQTT client (it carries mqtt.client_id) never counts as a result: a
    forged bayou.result_id must not make the node drop the agent's real result."""
    sender = Sender(EgressRouter([]), ResultDedup(), lambda conn: None)
    conn = object()

    def match(topic: str) -> list[tuple[object, int]]:
        return [(conn, 1)]

    def rec(offset: int, *extra: tuple[str, bytes]) -> Record:
        hs = [("mqtt.topic", b"devices/d1/commands"), ("mqtt.qos", b"1"), *extra]
        return Record("bayou.outbound", 0, offset, b"d1", hs, b"x", 0)

    forged = rec(1, ("bayou.result_id", b"r1"), ("mqtt.client_id", b"attacker"))
    real = rec(2, ("bayou.result_id", b"r1"))
    assert sender.read(forged, match) is not None  # type: ignore[arg-type]
    assert sender.read(real, match) is not None  # type: ignore[arg-type]
    assert sender.read(rec(3, ("bayou.result_id", b"r1")), match) is None  # type: ignore[arg-type]
