"""MQTT 3.1.1 conformance: tests named after the OASIS spec's normative statements.

Real sockets against real `bayou ingress` processes on the embedded Kafka. What the other
MQTT test files cover (QoS 2 flows, retained, wills, sessions, takeover, keep-alive timeout,
malformed packets, the in-flight window) is not repeated here.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_value, scrape
from bayou.processes import stop_process
from ingress.wire import codec
from tests.conftest import Proc, start_ingress
from tests.helpers import Mqtt, headers, read_topic, wait_until

pytestmark = pytest.mark.integration


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _codes(granted: list[object]) -> list[int]:
    return [int(getattr(c, "value", c)) for c in granted]  # type: ignore[call-overload]


def _connect_packet(
    client_id: str,
    *,
    clean: bool = True,
    keep_alive: int = 30,
    name: bytes = b"MQTT",
    level: int = 4,
) -> bytes:
    cid = client_id.encode()
    flags = 0x02 if clean else 0x00
    var = (
        len(name).to_bytes(2, "big") + name + bytes((level, flags)) + keep_alive.to_bytes(2, "big")
    )
    body = var + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + codec.encode_remaining_length(len(body)) + body


def _subscribe_packet(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = packet_id.to_bytes(2, "big")
    for filt, qos in filters:
        f = filt.encode()
        body += len(f).to_bytes(2, "big") + f + bytes((qos,))
    return b"\x82" + codec.encode_remaining_length(len(body)) + body


def _unsubscribe_packet(packet_id: int, filters: list[str]) -> bytes:
    body = packet_id.to_bytes(2, "big")
    for filt in filters:
        f = filt.encode()
        body += len(f).to_bytes(2, "big") + f
    return b"\xa2" + codec.encode_remaining_length(len(body)) + body


class Raw:
    """A client over a raw socket: whole packets in and out, nothing hidden."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.framer = codec.Framer(max_size=1 << 28)
        self.queue: deque[codec.Packet] = deque()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def packet(self, timeout: float = 10) -> codec.Packet:
        """The next packet from the node; TimeoutError if none, EOFError if closed."""
        self.sock.settimeout(timeout)
        while not self.queue:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed by the node")
            self.queue.extend(self.framer.feed(data))
        return self.queue.popleft()

    def connect(self, client_id: str, **kw: object) -> bytes:
        """Send CONNECT; return the CONNACK packet's bytes."""
        self.send(_connect_packet(client_id, **kw))  # type: ignore[arg-type]
        pkt = self.packet()
        assert pkt.type == codec.CONNACK, pkt
        return bytes((pkt.type << 4 | pkt.flags, len(pkt.body))) + pkt.body

    def closed_by_node(self, timeout: float = 5) -> bool:
        """True once the node closes the connection (whatever it sent first)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(4096):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def _publish(pkt: codec.Packet) -> tuple[str, int, int, bool, bool, bytes]:
    assert pkt.type == codec.PUBLISH, pkt
    return codec.decode_publish(pkt.flags, pkt.body)


def _metric(port: int, name: str) -> float:
    value = metric_value(port, name)
    assert value is not None, f"{name} missing from :{port}/metrics"
    return value


def _wait_metric(port: int, name: str, expected: float) -> None:
    try:
        wait_until(lambda: metric_value(port, name) == expected, 10, f"{name} == {expected}")
    except TimeoutError:
        raise AssertionError(f"{name} is {metric_value(port, name)}, expected {expected}") from None


# --- CONNECT ---------------------------------------------------------------------------------


def test_mqtt_3_1_3_6_and_7_zero_length_client_id_with_clean_session_is_accepted(
    kafka: EmbeddedKafka, ingress: Proc
) -> None:
    topic = f"conf/{_uid()}"
    raw = Raw(ingress.mqtt_port)
    try:
        # [MQTT-3.1.3-7]: a zero-byte ClientId comes with CleanSession = 1; then the node
        # accepts it, with session present 0 [MQTT-3.2.2-1].
        assert raw.connect("", clean=True) == b"\x20\x02\x00\x00"
        raw.send(_subscribe_packet(1, [(topic, 1)]))
        suback = raw.packet()
        assert (suback.type, suback.body) == (codec.SUBACK, b"\x00\x01\x01")
        # A second zero-length client (paho) on the same node. [MQTT-3.1.3-6]: each gets a
        # unique ClientId, so neither takes the other over.
        anon = Mqtt(ingress.mqtt_port, "").connect()
        try:
            anon.publish(topic, b"from-paho", qos=1).wait_for_publish(10)
        finally:
            anon.close()
        raw.send(codec.encode_publish(topic, b"from-raw", qos=1, packet_id=5))
        got: dict[bytes, int] = {}
        while len(got) < 2:
            pkt = raw.packet()
            if pkt.type == codec.PUBACK:
                assert pkt.body == b"\x00\x05"
                continue
            t, qos, pid, _retain, _dup, payload = _publish(pkt)
            assert t == topic
            got[payload] = qos
            raw.send(codec.encode_ack(codec.PUBACK, pid))
        assert got == {b"from-paho": 1, b"from-raw": 1}
    finally:
        raw.close()
    # Processed as if each client had sent its assigned id: two distinct, non-empty ids.
    recs = [r for r in read_topic(kafka.bootstrap, "bayou.messages") if r.key == topic.encode()]
    ids = {headers(r)["mqtt.client_id"] for r in recs}
    assert len(recs) == 2 and len(ids) == 2 and b"" not in ids, ids


def test_mqtt_3_1_2_1_wrong_protocol_name_closes_the_connection(ingress: Proc) -> None:
    cid = f"victim-{_uid()}"
    victim = Raw(ingress.mqtt_port)
    bad = Raw(ingress.mqtt_port)
    try:
        assert victim.connect(cid) == b"\x20\x02\x00\x00"
        # [MQTT-3.1.2-1]: the Server MAY disconnect, and MUST NOT go on processing the
        # CONNECT as MQTT 3.1.1. Bayou disconnects; it may send a refusing CONNACK (0x01)
        # first, never an accepting one.
        bad.send(_connect_packet(cid, name=b"MQTX", level=4))
        bad.sock.settimeout(5)
        first = b""
        try:
            first = bad.sock.recv(4)
        except ConnectionResetError:
            pass
        assert first in (b"", b"\x20\x02\x00\x01"), first
        assert bad.closed_by_node()
        # Not processed as a CONNECT: the same client id connected properly is not taken over.
        victim.send(b"\xc0\x00")
        assert victim.packet().type == codec.PINGRESP
    finally:
        victim.close()
        bad.close()


# --- maximum packet size ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_node(kafka: EmbeddedKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A node of its own with BAYOU_MAX_PACKET_SIZE=1024."""
    p = start_ingress(
        kafka.bootstrap,
        tmp_path_factory.mktemp("small") / "ingress.log",
        BAYOU_MAX_PACKET_SIZE="1024",
    )
    yield p
    stop_process(p.proc)


def _publish_of_size(topic: str, size: int, packet_id: int) -> bytes:
    """A QoS 1 PUBLISH of ``size`` bytes in all (fixed header with a 2-byte length included)."""
    head = 1 + 2 + 2 + len(topic.encode()) + 2
    pkt = codec.encode_publish(topic, b"x" * (size - head), 1, packet_id)
    assert len(pkt) == size
    return pkt


def test_packet_above_max_packet_size_disconnects_only_that_client(small_node: Proc) -> None:
    topic = f"conf/{_uid()}"
    sub = Mqtt(small_node.mqtt_port, f"sub-{_uid()}").connect()
    big = Raw(small_node.mqtt_port)
    huge = Raw(small_node.mqtt_port)
    try:
        sub.subscribe(topic, 1)
        assert big.connect(f"big-{_uid()}") == b"\x20\x02\x00\x00"
        # Exactly the maximum (1024 bytes in all, fixed header included) is accepted.
        big.send(_publish_of_size(topic, 1024, 1))
        assert big.packet().body == b"\x00\x01"  # PUBACK
        assert len(sub.expect(lambda m: m.topic == topic).payload) == 1024 - 3 - 2 - len(topic) - 2
        # One byte more: that client is closed, without a PUBACK.
        big.send(_publish_of_size(topic, 1025, 2))
        assert big.closed_by_node()
        # A header announcing 10 MB is refused before any of the body arrives.
        assert huge.connect(f"huge-{_uid()}") == b"\x20\x02\x00\x00"
        huge.send(b"\x32" + codec.encode_remaining_length(10_000_000) + b"\x00")
        assert huge.closed_by_node()
        # Everyone else carries on.
        pub = Mqtt(small_node.mqtt_port, f"pub-{_uid()}").connect()
        try:
            pub.publish(topic, b"still-here", qos=1).wait_for_publish(10)
        finally:
            pub.close()
        assert sub.expect(lambda m: m.topic == topic).payload == b"still-here"
    finally:
        sub.close()
        big.close()
        huge.close()
    assert small_node.proc.poll() is None


# --- topics and subscriptions ----------------------------------------------------------------


def test_mqtt_4_7_2_1_wildcards_do_not_match_dollar_topics(ingress: Proc) -> None:
    uid = _uid()
    topic = f"$bayou/{uid}"
    wild = Mqtt(ingress.mqtt_port, f"wild-{uid}").connect()
    dollar = Mqtt(ingress.mqtt_port, f"dollar-{uid}").connect()
    pub = Mqtt(ingress.mqtt_port, f"pub-{uid}").connect()
    try:
        assert _codes(wild.subscribe("#", 1)) == [1]
        assert _codes(wild.subscribe(f"+/{uid}", 1)) == [1]
        assert _codes(dollar.subscribe("$bayou/#", 1)) == [1]
        pub.publish(topic, b"live", qos=1).wait_for_publish(10)
        assert dollar.expect(lambda m: m.topic == topic).payload == b"live"
        # Retained too: a "#" subscriber gets no retained $-topic message, "$bayou/#" does.
        pub.client.publish(topic, b"kept", qos=1, retain=True).wait_for_publish(10)
        assert dollar.expect(lambda m: m.topic == topic).payload == b"kept"
        late_wild = Mqtt(ingress.mqtt_port, f"late-wild-{uid}").connect()
        late_dollar = Mqtt(ingress.mqtt_port, f"late-dollar-{uid}").connect()
        try:
            late_dollar.subscribe("$bayou/#", 1)
            m = late_dollar.expect(lambda m: m.topic == topic)
            assert (m.payload, m.retain) == (b"kept", True)
            late_wild.subscribe("#", 1)
            with pytest.raises(TimeoutError):
                late_wild.expect(lambda m: m.topic == topic, timeout=1.5)
        finally:
            late_wild.close()
            late_dollar.close()
        with pytest.raises(TimeoutError):
            wild.expect(lambda m: m.topic == topic, timeout=0.5)
        pub.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)  # clean up
    finally:
        wild.close()
        dollar.close()
        pub.close()


def test_mqtt_3_3_5_1_overlapping_subscriptions_deliver_once_at_the_highest_qos(
    ingress: Proc,
) -> None:
    # [MQTT-3.3.5-1]: respect the maximum QoS of all matching subscriptions. Bayou sends one
    # copy (the spec also allows one per matching subscription).
    base = f"conf/{_uid()}"
    topic = f"{base}/x"
    sub = Mqtt(ingress.mqtt_port, f"sub-{_uid()}").connect()
    pub = Mqtt(ingress.mqtt_port, f"pub-{_uid()}").connect()
    try:
        assert _codes(sub.subscribe(f"{base}/#", 0)) == [0]
        assert _codes(sub.subscribe(f"{base}/+", 1)) == [1]
        pub.publish(topic, b"q1", qos=1).wait_for_publish(10)
        pub.publish(topic, b"q2", qos=2).wait_for_publish(10)
        m1 = sub.expect(lambda m: m.topic == topic)
        m2 = sub.expect(lambda m: m.topic == topic)
        assert [(m1.payload, m1.qos), (m2.payload, m2.qos)] == [(b"q1", 1), (b"q2", 1)]
        with pytest.raises(TimeoutError):
            sub.expect(lambda m: m.topic == topic, timeout=1.5)
    finally:
        sub.close()
        pub.close()


def test_mqtt_3_8_4_3_identical_filter_replaces_the_subscription(ingress: Proc) -> None:
    topic = f"conf/{_uid()}"
    sub = Mqtt(ingress.mqtt_port, f"sub-{_uid()}").connect()
    pub = Mqtt(ingress.mqtt_port, f"pub-{_uid()}").connect()
    try:
        assert _codes(sub.subscribe(topic, 0)) == [0]
        assert _codes(sub.subscribe(topic, 2)) == [2]
        pub.publish(topic, b"once", qos=2).wait_for_publish(10)
        assert sub.expect(lambda m: m.topic == topic).qos == 2
        with pytest.raises(TimeoutError):
            sub.expect(lambda m: m.topic == topic, timeout=1.5)
    finally:
        sub.close()
        pub.close()


def test_mqtt_3_8_4_5_and_3_9_3_1_suback_grants_each_filter_in_order(ingress: Proc) -> None:
    base = f"conf/{_uid()}"
    c = Raw(ingress.mqtt_port)
    try:
        assert c.connect(f"c-{_uid()}") == b"\x20\x02\x00\x00"
        c.send(_subscribe_packet(0x1234, [(f"{base}/2", 2), (f"{base}/0", 0), (f"{base}/1", 1)]))
        suback = c.packet()
        # Same packet id [MQTT-3.8.4-2]; one code per filter, in order; QoS 2 granted as 2.
        assert (suback.type, suback.body) == (codec.SUBACK, b"\x12\x34\x02\x00\x01")
    finally:
        c.close()


def test_mqtt_3_10_4_4_and_5_unsuback_even_when_nothing_was_subscribed(ingress: Proc) -> None:
    c = Raw(ingress.mqtt_port)
    try:
        assert c.connect(f"c-{_uid()}") == b"\x20\x02\x00\x00"
        c.send(_unsubscribe_packet(0x0102, [f"never/{_uid()}"]))
        unsuback = c.packet()
        assert (unsuback.type, unsuback.flags, unsuback.body) == (codec.UNSUBACK, 0, b"\x01\x02")
        # Several filters, one subscribed and one not: one UNSUBACK [MQTT-3.10.4-6].
        c.send(_subscribe_packet(3, [("conf/some", 1)]))
        assert c.packet().type == codec.SUBACK
        c.send(_unsubscribe_packet(4, ["conf/some", f"never/{_uid()}"]))
        assert c.packet().body == b"\x00\x04"
        c.send(b"\xc0\x00")
        assert c.packet().type == codec.PINGRESP  # nothing else came in between
    finally:
        c.close()


# --- across nodes ----------------------------------------------------------------------------


def test_publisher_on_one_node_reaches_subscriber_on_another(
    kafka: EmbeddedKafka, ingress: Proc, tmp_path: Path
) -> None:
    other = start_ingress(kafka.bootstrap, tmp_path / "b.log")
    try:
        topic = f"conf/{_uid()}"
        sub_b = Mqtt(other.mqtt_port, f"sub-b-{_uid()}").connect()
        sub_a = Mqtt(ingress.mqtt_port, f"sub-a-{_uid()}").connect()
        pub_a = Mqtt(ingress.mqtt_port, f"pub-a-{_uid()}").connect()
        pub_b = Mqtt(other.mqtt_port, f"pub-b-{_uid()}").connect()
        try:
            sub_b.subscribe(topic, 2)
            sub_a.subscribe(topic, 2)
            for qos in (0, 1, 2):
                pub_a.publish(topic, f"a->b q{qos}".encode(), qos=qos).wait_for_publish(10)
            got = [sub_b.expect(lambda m: m.topic == topic) for _ in range(3)]
            assert sorted((m.payload, m.qos) for m in got) == [
                (b"a->b q0", 0),
                (b"a->b q1", 1),
                (b"a->b q2", 2),
            ]
            pub_b.publish(topic, b"b->a", qos=1).wait_for_publish(10)
            assert sub_a.expect(lambda m: m.payload == b"b->a").qos == 1
        finally:
            for c in (sub_a, sub_b, pub_a, pub_b):
                c.close()
    finally:
        stop_process(other.proc)


# --- keep-alive ------------------------------------------------------------------------------


def test_mqtt_3_12_4_1_pingresp_and_pings_keep_the_connection_open(ingress: Proc) -> None:
    # The keep-alive timeout itself is tested in test_ingress_mqtt.py.
    busy = Raw(ingress.mqtt_port)
    off = Raw(ingress.mqtt_port)
    try:
        assert busy.connect(f"ping-{_uid()}", keep_alive=1) == b"\x20\x02\x00\x00"
        assert off.connect(f"ka0-{_uid()}", keep_alive=0) == b"\x20\x02\x00\x00"
        # PINGREQ every 0.5 s for 3 s (twice the 1.5 s limit): answered each time, never closed.
        for _ in range(6):
            busy.send(b"\xc0\x00")
            pkt = busy.packet(timeout=2)
            assert (pkt.type, pkt.flags, pkt.body) == (codec.PINGRESP, 0, b"")
            time.sleep(0.5)
        # Keep Alive 0 turns the mechanism off (§3.1.2.10): silent for 3 s, still served.
        off.send(b"\xc0\x00")
        assert off.packet(timeout=2).type == codec.PINGRESP
    finally:
        busy.close()
        off.close()


# --- metrics ---------------------------------------------------------------------------------


def test_session_metrics_move_with_sessions(ingress: Proc) -> None:
    port = ingress.metrics_port
    created = _metric(port, "bayou_ingress_sessions_created_total")
    resumed = _metric(port, "bayou_ingress_sessions_resumed_total")
    stored = _metric(port, "bayou_ingress_sessions_stored")
    cid = f"m-{_uid()}"
    c = Mqtt(ingress.mqtt_port, cid, clean_session=False).connect()
    c.subscribe(f"conf/{cid}", 1)
    c.close()
    assert _metric(port, "bayou_ingress_sessions_created_total") == created + 1
    _wait_metric(port, "bayou_ingress_sessions_stored", stored + 1)
    c = Mqtt(ingress.mqtt_port, cid, clean_session=False).connect()
    assert c.connack_flags == 1
    c.close()
    assert _metric(port, "bayou_ingress_sessions_resumed_total") == resumed + 1
    assert _metric(port, "bayou_ingress_sessions_created_total") == created + 1
    # A clean session discards the stored one [MQTT-3.1.2-6].
    c = Mqtt(ingress.mqtt_port, cid, clean_session=True).connect()
    c.close()
    _wait_metric(port, "bayou_ingress_sessions_stored", stored)
    assert _metric(port, "bayou_ingress_sessions_created_total") == created + 1


def test_sessions_stored_does_not_count_clean_sessions(ingress: Proc) -> None:
    port = ingress.metrics_port
    stored = _metric(port, "bayou_ingress_sessions_stored")
    c = Mqtt(ingress.mqtt_port, f"clean-{_uid()}", clean_session=True).connect()
    try:
        # Nothing must change: time for the node to read its clean record back from Kafka.
        time.sleep(0.5)
        assert _metric(port, "bayou_ingress_sessions_stored") == stored
    finally:
        c.close()


def test_retained_takeover_and_will_metrics_move(ingress: Proc) -> None:
    port = ingress.metrics_port
    retained = _metric(port, "bayou_ingress_retained_messages")
    takeovers = _metric(port, "bayou_ingress_takeovers_total")
    wills = _metric(port, "bayou_ingress_wills_sent_total")
    topic = f"conf/{_uid()}"
    pub = Mqtt(ingress.mqtt_port, f"pub-{_uid()}").connect()
    try:
        pub.client.publish(topic, b"r", qos=1, retain=True).wait_for_publish(10)
        _wait_metric(port, "bayou_ingress_retained_messages", retained + 1)
        pub.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
        _wait_metric(port, "bayou_ingress_retained_messages", retained)
    finally:
        pub.close()
    cid = f"dup-{_uid()}"
    first, second = Raw(ingress.mqtt_port), Raw(ingress.mqtt_port)
    try:
        assert first.connect(cid) == b"\x20\x02\x00\x00"
        assert second.connect(cid) == b"\x20\x02\x00\x00"
        assert first.closed_by_node()
        assert _metric(port, "bayou_ingress_takeovers_total") == takeovers + 1
    finally:
        first.close()
        second.close()
    w = Raw(ingress.mqtt_port)
    wt = f"will/{_uid()}".encode()
    wcid = f"w-{_uid()}".encode()
    var = b"\x00\x04MQTT\x04\x0e\x00\x1e"  # clean session, will flag, will QoS 1
    body = (
        var + len(wcid).to_bytes(2, "big") + wcid + len(wt).to_bytes(2, "big") + wt + b"\x00\x01x"
    )
    w.send(b"\x10" + codec.encode_remaining_length(len(body)) + body)
    assert w.packet().body == b"\x00\x00"
    w.close()  # no DISCONNECT: the will goes out
    _wait_metric(port, "bayou_ingress_wills_sent_total", wills + 1)


def test_protocol_error_reasons_are_a_bounded_label_set(ingress: Proc) -> None:
    marker = _uid().upper()
    c = Raw(ingress.mqtt_port)
    try:
        c.send(_connect_packet(f"c-{_uid()}", name=marker.encode()))
        assert c.closed_by_node()
    finally:
        c.close()
    samples = scrape(ingress.metrics_port, timeout=5)
    assert samples is not None
    kinds = [lbl["kind"] for lbl, _ in samples.labelled("bayou_ingress_protocol_errors_total")]
    assert "unsupported_protocol" in kinds
    assert set(kinds) <= {
        "malformed", "unsupported_protocol", "identifier_rejected", "keepalive_timeout",
        "receive_maximum",
    }, kinds  # fmt: skip
