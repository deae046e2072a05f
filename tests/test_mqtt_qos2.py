"""QoS 2 in both directions (MQTT 3.1.1 §4.3.3), with Kafka between publisher and subscriber."""

from __future__ import annotations

import socket
import uuid

import pytest

from bayou.embedded import EmbeddedKafka
from ingress.wire import codec
from tests.conftest import Proc
from tests.helpers import Mqtt, read_topic
from tests.test_ingress_mqtt import _closed, _connect_packet

pytestmark = pytest.mark.integration


def _raw_client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(_connect_packet(f"raw-{uuid.uuid4().hex[:6]}"))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    return s


def _recv_packet(s: socket.socket) -> codec.Packet:
    framer = codec.Framer()
    while True:
        data = s.recv(4096)
        assert data, "connection closed"
        pkts = framer.feed(data)
        if pkts:
            assert len(pkts) == 1, pkts
            return pkts[0]


def test_qos2_publish_reaches_a_qos2_subscriber_once(ingress: Proc) -> None:
    topic = f"q2/{uuid.uuid4().hex[:8]}"
    sub = Mqtt(ingress.mqtt_port, f"s-{uuid.uuid4().hex[:6]}").connect()
    pub = Mqtt(ingress.mqtt_port, f"p-{uuid.uuid4().hex[:6]}").connect()
    try:
        assert [int(getattr(c, "value", c)) for c in sub.subscribe(topic, 2)] == [2]
        pub.publish(topic, b"exactly-once", qos=2).wait_for_publish(10)
        m = sub.expect(lambda m: m.topic == topic)
        assert (m.payload, m.qos) == (b"exactly-once", 2)
        with pytest.raises(TimeoutError):
            sub.expect(lambda m: m.topic == topic, timeout=1.5)
    finally:
        sub.close()
        pub.close()


def test_mqtt_4_3_3_resent_publish_before_pubrel_is_not_written_twice(
    kafka: EmbeddedKafka, ingress: Proc
) -> None:
    topic = f"q2/{uuid.uuid4().hex[:8]}"
    s = _raw_client(ingress.mqtt_port)
    try:
        publish = codec.encode_publish(topic, b"once", qos=2, packet_id=7)
        s.sendall(publish)
        assert s.recv(4) == b"\x50\x02\x00\x07"  # PUBREC after Kafka acknowledged
        s.sendall(bytes((publish[0] | 0x08,)) + publish[1:])  # the same, DUP set
        assert s.recv(4) == b"\x50\x02\x00\x07"  # PUBREC again, nothing written
        s.sendall(b"\x62\x02\x00\x07")  # PUBREL
        assert s.recv(4) == b"\x70\x02\x00\x07"  # PUBCOMP
        s.sendall(b"\x62\x02\x00\x07")  # a PUBREL for a finished id is still answered
        assert s.recv(4) == b"\x70\x02\x00\x07"
    finally:
        s.close()
    recs = [r for r in read_topic(kafka.bootstrap, "bayou.messages") if r.key == topic.encode()]
    assert [r.value for r in recs] == [b"once"]


def test_qos2_outbound_flow_publish_pubrec_pubrel_pubcomp(ingress: Proc) -> None:
    topic = f"q2/{uuid.uuid4().hex[:8]}"
    s = _raw_client(ingress.mqtt_port)
    pub = Mqtt(ingress.mqtt_port, f"p-{uuid.uuid4().hex[:6]}").connect()
    try:
        t = topic.encode()
        body = b"\x00\x01" + len(t).to_bytes(2, "big") + t + b"\x02"
        s.sendall(b"\x82" + bytes((len(body),)) + body)
        assert s.recv(5) == b"\x90\x03\x00\x01\x02"
        pub.publish(topic, b"out2", qos=2).wait_for_publish(10)
        pkt = _recv_packet(s)
        got_topic, qos, pid, retain, dup, payload = codec.decode_publish(pkt.flags, pkt.body)
        assert (got_topic, qos, retain, dup, payload) == (topic, 2, False, False, b"out2")
        s.sendall(codec.encode_ack(codec.PUBREC, pid))
        assert s.recv(4) == b"\x62\x02" + pid.to_bytes(2, "big")  # PUBREL
        s.sendall(codec.encode_ack(codec.PUBCOMP, pid))
        s.sendall(b"\xc0\x00")
        assert s.recv(2) == b"\xd0\x00"  # still connected and served
    finally:
        s.close()
        pub.close()


def test_pubrel_for_unknown_id_answered_and_malformed_pubrel_closes(ingress: Proc) -> None:
    s = _raw_client(ingress.mqtt_port)
    try:
        s.sendall(b"\x62\x02\x00\x09" + b"\x62\x02\x00\x09")
        # An unknown id is answered (the flow may have finished on a previous connection).
        assert s.recv(4) == b"\x70\x02\x00\x09"
        s.sendall(b"\x62\x00")  # malformed PUBREL
        assert _closed(s)
    finally:
        s.close()
