"""The ingress node over real sockets, with the real embedded Kafka behind it."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from ingress.wire import codec
from tests.conftest import Proc
from tests.helpers import Mqtt, headers, read_topic

pytestmark = pytest.mark.integration


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def test_subscriber_receives_another_clients_publish_through_kafka(
    kafka: object, ingress: Proc
) -> None:
    dev = f"dev-{_uid()}"
    sub = Mqtt(ingress.mqtt_port, f"sub-{_uid()}").connect()
    pub = Mqtt(ingress.mqtt_port, f"pub-{_uid()}").connect()
    try:
        assert [int(getattr(c, "value", c)) for c in sub.subscribe("sensors/#", 1)] == [1]
        info = pub.publish(f"sensors/{dev}/telemetry", b"hello", qos=1)
        info.wait_for_publish(10)
        msg = sub.expect(lambda m: m.topic == f"sensors/{dev}/telemetry")
        assert (msg.payload, msg.qos, msg.retain) == (b"hello", 1, False)
    finally:
        sub.close()
        pub.close()


def test_qos1_publish_is_in_kafka_with_the_record_contract_when_acked(
    kafka: object, ingress: Proc
) -> None:
    from bayou.embedded import EmbeddedKafka

    assert isinstance(kafka, EmbeddedKafka)
    dev = f"dev-{_uid()}"
    cid = f"pub-{_uid()}"
    pub = Mqtt(ingress.mqtt_port, cid).connect()
    before_ms = int(time.time() * 1000)
    try:
        info = pub.publish(f"sensors/{dev}/telemetry", b"\x00raw\xff", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        pub.close()
    # PUBACK came back, so the record must already be in Kafka.
    recs = [r for r in read_topic(kafka.bootstrap, "bayou.telemetry") if r.key == dev.encode()]
    assert len(recs) == 1
    h = headers(recs[0])
    assert recs[0].value == b"\x00raw\xff"
    assert h["mqtt.topic"] == f"sensors/{dev}/telemetry".encode()
    assert h["mqtt.qos"] == b"1"
    assert h["mqtt.retain"] == b"0"
    assert h["mqtt.client_id"] == cid.encode()
    assert int(h["bayou.ingress_ts"]) >= before_ms


def test_unrouted_publish_goes_to_default_topic_keyed_by_mqtt_topic(
    kafka: object, ingress: Proc
) -> None:
    from bayou.embedded import EmbeddedKafka

    assert isinstance(kafka, EmbeddedKafka)
    topic = f"misc/{_uid()}"
    pub = Mqtt(ingress.mqtt_port, f"pub-{_uid()}").connect()
    try:
        pub.publish(topic, b"x", qos=1).wait_for_publish(10)
    finally:
        pub.close()
    recs = [r for r in read_topic(kafka.bootstrap, "bayou.messages") if r.key == topic.encode()]
    assert [r.value for r in recs] == [b"x"]


def test_subscription_qos_caps_delivery_qos(ingress: Proc) -> None:
    t = f"misc/{_uid()}"
    sub = Mqtt(ingress.mqtt_port, f"sub-{_uid()}").connect()
    pub = Mqtt(ingress.mqtt_port, f"pub-{_uid()}").connect()
    try:
        sub.subscribe(t, 0)
        pub.publish(t, b"q", qos=1).wait_for_publish(10)
        assert sub.expect(lambda m: m.topic == t).qos == 0
    finally:
        sub.close()
        pub.close()


def test_mqtt_3_8_4_invalid_filter_gets_suback_failure(ingress: Proc) -> None:
    # Raw bytes: paho refuses to send an invalid filter at all.
    s = socket.create_connection(("127.0.0.1", ingress.mqtt_port), timeout=5)
    s.sendall(_connect_packet(f"c-{_uid()}"))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    body = b"\x00\x09" + b"\x00\x05a/#/b\x01" + b"\x00\x03a/b\x01"
    s.sendall(b"\x82" + bytes((len(body),)) + body)
    assert s.recv(6) == b"\x90\x04\x00\x09\x80\x01"  # one failure, one granted QoS 1
    s.close()


def test_unsubscribed_client_receives_nothing_more(ingress: Proc) -> None:
    t = f"misc/{_uid()}"
    sub = Mqtt(ingress.mqtt_port, f"sub-{_uid()}").connect()
    pub = Mqtt(ingress.mqtt_port, f"pub-{_uid()}").connect()
    try:
        sub.subscribe(t, 1)
        pub.publish(t, b"1", qos=1).wait_for_publish(10)
        sub.expect(lambda m: m.payload == b"1")
        sub.unsubscribe(t)
        pub.publish(t, b"2", qos=1).wait_for_publish(10)
        with pytest.raises(TimeoutError):
            sub.expect(lambda m: m.topic == t, timeout=1.5)
    finally:
        sub.close()
        pub.close()


# --- bad input over raw sockets: that one client is closed, the others carry on --------


def _raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def _connect_packet(client_id: str, level: int = 4, name: bytes = b"MQTT") -> bytes:
    cid = client_id.encode()
    var = len(name).to_bytes(2, "big") + name + bytes((level, 0x02)) + (30).to_bytes(2, "big")
    body = var + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + codec.encode_remaining_length(len(body)) + body


def _closed(s: socket.socket) -> bool:
    try:
        data = s.recv(1024)
        while data:
            data = s.recv(1024)
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_mqtt_3_1_0_1_packet_before_connect_closes_connection(ingress: Proc) -> None:
    s = _raw(ingress.mqtt_port)
    s.sendall(codec.encode_publish("a/b", b"x"))
    assert _closed(s)
    s.close()


def test_mqtt_3_1_2_2_wrong_protocol_level_gets_connack_1(ingress: Proc) -> None:
    s = _raw(ingress.mqtt_port)
    s.sendall(_connect_packet("old", level=3))
    assert s.recv(4) == b"\x20\x02\x00\x01"
    assert _closed(s)
    s.close()


def test_mqtt_3_1_3_8_empty_client_id_without_clean_session_rejected(ingress: Proc) -> None:
    s = _raw(ingress.mqtt_port)
    body = b"\x00\x04MQTT\x04\x00\x00\x1e\x00\x00"  # clean session = 0, client id ""
    s.sendall(b"\x10" + bytes((len(body),)) + body)
    assert s.recv(4) == b"\x20\x02\x00\x02"
    assert _closed(s)
    s.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x30\xff\xff\xff\xff\x01",  # remaining length longer than 4 bytes
        b"\x32\x03\x00\x01a",  # QoS 1 PUBLISH without a packet id
        b"\xf0\x00",  # reserved packet type 15
        b"\x10\x00",  # a second CONNECT
    ],
)
def test_malformed_packet_closes_only_that_client(ingress: Proc, garbage: bytes) -> None:
    t = f"misc/{_uid()}"
    sub = Mqtt(ingress.mqtt_port, f"sub-{_uid()}").connect()
    try:
        sub.subscribe(t, 1)
        bad = _raw(ingress.mqtt_port)
        bad.sendall(_connect_packet(f"bad-{_uid()}"))
        assert bad.recv(4) == b"\x20\x02\x00\x00"
        bad.sendall(garbage)
        assert _closed(bad)
        bad.close()
        # Everyone else carries on.
        pub = Mqtt(ingress.mqtt_port, f"pub-{_uid()}").connect()
        pub.publish(t, b"still", qos=1).wait_for_publish(10)
        assert sub.expect(lambda m: m.topic == t).payload == b"still"
        pub.close()
    finally:
        sub.close()
    assert ingress.proc.poll() is None


def test_mqtt_3_1_4_2_second_connection_with_same_client_id_takes_over(ingress: Proc) -> None:
    cid = f"dup-{_uid()}"
    first = _raw(ingress.mqtt_port)
    first.sendall(_connect_packet(cid))
    assert first.recv(4) == b"\x20\x02\x00\x00"
    second = _raw(ingress.mqtt_port)
    second.sendall(_connect_packet(cid))
    assert second.recv(4) == b"\x20\x02\x00\x00"
    assert _closed(first)
    second.sendall(b"\xc0\x00")  # PINGREQ still answered on the new connection
    assert second.recv(2) == b"\xd0\x00"
    first.close()
    second.close()


def test_mqtt_3_1_2_24_keepalive_timeout_closes_connection(ingress: Proc) -> None:
    s = _raw(ingress.mqtt_port)
    cid = f"ka-{_uid()}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x01" + len(cid).to_bytes(2, "big") + cid  # keep-alive 1 s
    s.sendall(b"\x10" + bytes((len(body),)) + body)
    assert s.recv(4) == b"\x20\x02\x00\x00"
    s.settimeout(5)
    t0 = time.monotonic()
    assert _closed(s)
    assert time.monotonic() - t0 >= 1.2  # closed after 1.5 x keep-alive, not before
    s.close()
