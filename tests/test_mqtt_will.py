"""Will messages (MQTT 3.1.1 §3.1.2.5): sent when a client goes away without DISCONNECT."""

from __future__ import annotations

import socket
import uuid

import pytest

from bayou.metrics_scrape import metric_value
from ingress.wire import codec
from tests.conftest import Proc
from tests.helpers import Mqtt

pytestmark = pytest.mark.integration


def _connect_with_will(
    client_id: str, will_topic: str, will: bytes, qos: int = 1, retain: bool = False,
    keep_alive: int = 30,
) -> bytes:  # fmt: skip
    flags = 0x02 | 0x04 | (qos << 3) | (0x20 if retain else 0)
    var = b"\x00\x04MQTT\x04" + bytes((flags,)) + keep_alive.to_bytes(2, "big")
    cid, wt = client_id.encode(), will_topic.encode()
    body = (var + len(cid).to_bytes(2, "big") + cid + len(wt).to_bytes(2, "big") + wt
            + len(will).to_bytes(2, "big") + will)  # fmt: skip
    return b"\x10" + codec.encode_remaining_length(len(body)) + body


def _will_client(port: int, topic: str, payload: bytes, **kw: int | bool) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(_connect_with_will(f"w-{uuid.uuid4().hex[:6]}", topic, payload, **kw))  # type: ignore[arg-type]
    assert s.recv(4) == b"\x20\x02\x00\x00"
    return s


def _watch(port: int, topic: str) -> Mqtt:
    w = Mqtt(port, f"watch-{uuid.uuid4().hex[:6]}").connect()
    w.subscribe(topic, 2)
    return w


def test_mqtt_3_1_2_8_will_published_on_socket_loss(ingress: Proc) -> None:
    topic = f"will/{uuid.uuid4().hex[:8]}"
    watch = _watch(ingress.mqtt_port, topic)
    try:
        s = _will_client(ingress.mqtt_port, topic, b"gone", qos=1)
        s.close()  # no DISCONNECT
        m = watch.expect(lambda m: m.topic == topic)
        assert (m.payload, m.qos, m.retain) == (b"gone", 1, False)
    finally:
        watch.close()
    assert (metric_value(ingress.metrics_port, "bayou_ingress_wills_sent_total") or 0) >= 1


def test_mqtt_3_1_2_10_no_will_after_disconnect(ingress: Proc) -> None:
    topic = f"will/{uuid.uuid4().hex[:8]}"
    watch = _watch(ingress.mqtt_port, topic)
    try:
        s = _will_client(ingress.mqtt_port, topic, b"should-not-come")
        s.sendall(b"\xe0\x00")  # DISCONNECT
        s.close()
        with pytest.raises(TimeoutError):
            watch.expect(lambda m: m.topic == topic, timeout=2)
    finally:
        watch.close()


def test_will_published_on_keepalive_timeout(ingress: Proc) -> None:
    topic = f"will/{uuid.uuid4().hex[:8]}"
    watch = _watch(ingress.mqtt_port, topic)
    try:
        s = _will_client(ingress.mqtt_port, topic, b"silent", keep_alive=1)
        # Half-open: the socket stays open but the client says nothing for 1.5 x keep-alive.
        m = watch.expect(lambda m: m.topic == topic, timeout=10)
        assert m.payload == b"silent"
        s.close()
    finally:
        watch.close()


def test_will_published_on_protocol_error_with_qos2_and_retain(ingress: Proc) -> None:
    topic = f"will/{uuid.uuid4().hex[:8]}"
    watch = _watch(ingress.mqtt_port, topic)
    try:
        s = _will_client(ingress.mqtt_port, topic, b"broken", qos=2, retain=True)
        s.sendall(b"\xf0\x00")  # reserved packet type: the node closes the connection
        m = watch.expect(lambda m: m.topic == topic)
        assert (m.payload, m.qos) == (b"broken", 2)
        s.close()
    finally:
        watch.close()
    # Will retain: a later subscriber gets it as a retained message.
    late = _watch(ingress.mqtt_port, topic)
    try:
        m = late.expect(lambda m: m.topic == topic)
        assert (m.payload, m.retain) == (b"broken", True)
    finally:
        late.close()


def test_invalid_will_topic_is_refused(ingress: Proc) -> None:
    s = socket.create_connection(("127.0.0.1", ingress.mqtt_port), timeout=10)
    try:
        s.sendall(_connect_with_will("bad-will", "a/+/b", b"x"))
        assert s.recv(16) == b""  # closed without CONNACK
    finally:
        s.close()
