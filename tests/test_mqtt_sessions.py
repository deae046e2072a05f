"""Persistent sessions (clean session = 0) kept in Kafka: resumed on any node, from Kafka."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_value
from bayou.processes import stop_process
from ingress.wire import codec
from tests.conftest import Proc, start_ingress
from tests.helpers import Mqtt, read_topic, wait_until
from tests.test_ingress_mqtt import _closed

pytestmark = pytest.mark.integration


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _persistent(port: int, client_id: str) -> Mqtt:
    return Mqtt(port, client_id, clean_session=False).connect()


def _session_present(m: Mqtt) -> bool:
    return bool(m.connack_flags & 0x01)


def _session_records(bootstrap: str, client_id: str) -> list[Any]:
    """The records of ``client_id`` in ``bayou.sessions``, oldest first."""
    return [r for r in read_topic(bootstrap, "bayou.sessions") if r.key == client_id.encode()]


def _wait_offline(bootstrap: str, client_id: str) -> None:
    """Wait until Kafka has the record a disconnect writes: the session with no owner."""

    def offline() -> bool:
        recs = _session_records(bootstrap, client_id)
        return bool(recs) and recs[-1].value is not None and not json.loads(recs[-1].value)["owner"]

    wait_until(offline, 20, f"the offline session of {client_id} in bayou.sessions")


def _publish_all(port: int, topic: str, payloads: list[bytes], qos: int = 1) -> None:
    pub = Mqtt(port, f"pub-{_uid()}").connect()
    try:
        for p in payloads:
            pub.publish(topic, p, qos=qos).wait_for_publish(10)
    finally:
        pub.close()


def test_mqtt_3_1_2_4_offline_messages_delivered_on_reconnect_in_order(
    kafka: EmbeddedKafka, ingress: Proc
) -> None:
    cid, topic = f"dev-{_uid()}", f"s/{_uid()}"
    c = _persistent(ingress.mqtt_port, cid)
    assert not _session_present(c)  # [MQTT-3.2.2-3]: no session stored yet
    c.subscribe(topic, 1)
    c.close()
    _wait_offline(kafka.bootstrap, cid)
    _publish_all(ingress.mqtt_port, topic, [b"m1", b"m2", b"m3"])
    c = _persistent(ingress.mqtt_port, cid)
    try:
        assert _session_present(c)  # [MQTT-3.2.2-2]
        got = [c.expect(lambda m: m.topic == topic) for _ in range(3)]
        assert [m.payload for m in got] == [b"m1", b"m2", b"m3"]
        assert {m.qos for m in got} == {1}
        # And live delivery goes on after the replay.
        _publish_all(ingress.mqtt_port, topic, [b"m4"])
        assert c.expect(lambda m: m.topic == topic).payload == b"m4"
    finally:
        c.close()


def test_mqtt_3_1_2_6_clean_session_discards_the_stored_session(
    kafka: EmbeddedKafka, ingress: Proc
) -> None:
    cid, topic = f"dev-{_uid()}", f"s/{_uid()}"
    c = _persistent(ingress.mqtt_port, cid)
    c.subscribe(topic, 1)
    c.close()
    _wait_offline(kafka.bootstrap, cid)
    clean = Mqtt(ingress.mqtt_port, cid, clean_session=True).connect()
    assert not _session_present(clean)  # [MQTT-3.2.2-1]
    clean.close()
    # The clean session's disconnect writes a tombstone for the client id.
    wait_until(
        lambda: _session_records(kafka.bootstrap, cid)[-1].value is None,
        20,
        f"the tombstone of {cid} in bayou.sessions",
    )
    _publish_all(ingress.mqtt_port, topic, [b"lost-on-purpose"])
    c = _persistent(ingress.mqtt_port, cid)
    try:
        assert not _session_present(c)
        with pytest.raises(TimeoutError):
            c.expect(lambda m: m.topic == topic, timeout=1.5)
    finally:
        c.close()


def test_session_resumes_on_another_node(
    kafka: EmbeddedKafka, ingress: Proc, tmp_path: Path
) -> None:
    other = start_ingress(kafka.bootstrap, tmp_path / "b.log")
    try:
        cid, topic = f"dev-{_uid()}", f"s/{_uid()}"
        c = _persistent(ingress.mqtt_port, cid)
        c.subscribe(topic, 2)
        c.close()
        _wait_offline(kafka.bootstrap, cid)
        _publish_all(ingress.mqtt_port, topic, [b"a", b"b"], qos=2)
        c = _persistent(other.mqtt_port, cid)
        try:
            assert _session_present(c)
            got = [c.expect(lambda m: m.topic == topic) for _ in range(2)]
            assert [(m.payload, m.qos) for m in got] == [(b"a", 2), (b"b", 2)]
        finally:
            c.close()
    finally:
        stop_process(other.proc)


@pytest.mark.parametrize("qos", [1, 2])
def test_kill_9_of_a_node_loses_no_qos1_or_qos2_message(
    kafka: EmbeddedKafka, tmp_path: Path, qos: int
) -> None:
    a = start_ingress(kafka.bootstrap, tmp_path / "a.log")
    b = start_ingress(kafka.bootstrap, tmp_path / "b.log")
    try:
        cid, topic = f"dev-{_uid()}", f"s/{_uid()}"
        c = _persistent(a.mqtt_port, cid)
        c.subscribe(topic, qos)
        _publish_all(b.mqtt_port, topic, [b"before-1", b"before-2"], qos=qos)
        assert [c.expect().payload for _ in range(2)] == [b"before-1", b"before-2"]
        # At least one checkpoint of the session after both were delivered and completed:
        # a record created after now with nothing in flight.
        received_ms = int(time.time() * 1000)
        wait_until(
            lambda: any(
                r.timestamp > received_ms and r.value and not json.loads(r.value)["pending"]
                for r in _session_records(kafka.bootstrap, cid)
            ),
            20,
            f"a checkpoint of {cid} in bayou.sessions",
        )
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
        c.client.loop_stop()
        sent = [f"during-{i}".encode() for i in range(20)]
        _publish_all(b.mqtt_port, topic, sent, qos=qos)
        c2 = _persistent(b.mqtt_port, cid)
        try:
            assert _session_present(c2)
            got: list[bytes] = []
            while len(set(got) & set(sent)) < len(sent):
                got.append(c2.expect(lambda m: m.topic == topic, timeout=20).payload)
            # Every message, in order; duplicates only of what came before the crash.
            during = [g for g in got if g in sent]
            assert during == sent
            if qos == 2:
                assert b"before-1" not in got and b"before-2" not in got, got
        finally:
            c2.close()
    finally:
        stop_process(a.proc)
        stop_process(b.proc)


def test_mqtt_3_1_4_2_takeover_across_nodes(
    kafka: EmbeddedKafka, ingress: Proc, tmp_path: Path
) -> None:
    other = start_ingress(kafka.bootstrap, tmp_path / "b.log")
    try:
        cid = f"dup-{_uid()}"
        first = socket.create_connection(("127.0.0.1", ingress.mqtt_port), timeout=10)
        first.sendall(_connect(cid, clean=True))
        assert first.recv(4) == b"\x20\x02\x00\x00"
        second = socket.create_connection(("127.0.0.1", other.mqtt_port), timeout=10)
        second.sendall(_connect(cid, clean=True))
        assert second.recv(4) == b"\x20\x02\x00\x00"
        assert _closed(first)  # the older connection, on the other node, is closed
        second.sendall(b"\xc0\x00")
        assert second.recv(2) == b"\xd0\x00"
        first.close()
        second.close()
        assert (metric_value(ingress.metrics_port, "bayou_ingress_takeovers_total") or 0) >= 1
    finally:
        stop_process(other.proc)


def _connect(client_id: str, clean: bool) -> bytes:
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04" + bytes((0x02 if clean else 0x00,)) + (30).to_bytes(2, "big")
    body = var + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + codec.encode_remaining_length(len(body)) + body


def _read_packet(s: socket.socket, framer: codec.Framer) -> codec.Packet:
    while True:
        pkts = framer.feed(s.recv(4096))
        if pkts:
            assert len(pkts) == 1
            return pkts[0]


def test_qos2_outbound_exactly_once_across_reconnects(ingress: Proc) -> None:
    cid, topic = f"q2-{_uid()}", f"s/{_uid()}"
    s = socket.create_connection(("127.0.0.1", ingress.mqtt_port), timeout=10)
    s.sendall(_connect(cid, clean=False))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    t = topic.encode()
    body = b"\x00\x01" + len(t).to_bytes(2, "big") + t + b"\x02"
    s.sendall(b"\x82" + bytes((len(body),)) + body)
    assert s.recv(5) == b"\x90\x03\x00\x01\x02"
    _publish_all(ingress.mqtt_port, topic, [b"once"], qos=2)
    pkt = _read_packet(s, codec.Framer())
    _, qos, pid, _, dup, payload = codec.decode_publish(pkt.flags, pkt.body)
    assert (qos, dup, payload) == (2, False, b"once")
    s.close()  # gone before PUBREC

    s = socket.create_connection(("127.0.0.1", ingress.mqtt_port), timeout=10)
    s.sendall(_connect(cid, clean=False))
    framer = codec.Framer()
    pkts = framer.feed(s.recv(4))
    assert pkts[0].body == b"\x01\x00"  # session present
    pkt = _read_packet(s, framer)
    _, qos, pid2, _, dup, payload = codec.decode_publish(pkt.flags, pkt.body)
    assert (qos, pid2, dup, payload) == (2, pid, True, b"once")  # same id, DUP [MQTT-4.4.0-1]
    s.sendall(codec.encode_ack(codec.PUBREC, pid))
    assert s.recv(4) == b"\x62\x02" + pid.to_bytes(2, "big")
    s.close()  # gone before PUBCOMP

    s = socket.create_connection(("127.0.0.1", ingress.mqtt_port), timeout=10)
    s.sendall(_connect(cid, clean=False))
    assert s.recv(4) == b"\x20\x02\x01\x00"
    assert s.recv(4) == b"\x62\x02" + pid.to_bytes(2, "big")  # PUBREL again, no PUBLISH
    s.sendall(codec.encode_ack(codec.PUBCOMP, pid))
    # PINGRESP after PUBCOMP on the same socket: the node has read the PUBCOMP. Without it a
    # loaded node may take the next connection over first, and then rightly resend PUBREL.
    s.sendall(b"\xc0\x00")
    assert s.recv(2) == codec.PINGRESP_BYTES
    s.close()

    s = socket.create_connection(("127.0.0.1", ingress.mqtt_port), timeout=10)
    s.sendall(_connect(cid, clean=False))
    assert s.recv(4) == b"\x20\x02\x01\x00"
    s.settimeout(1.5)
    with pytest.raises(TimeoutError):
        s.recv(4)  # nothing more: delivered exactly once
    s.close()


def test_session_record_in_kafka_has_subscriptions(kafka: EmbeddedKafka, ingress: Proc) -> None:
    cid, topic = f"dev-{_uid()}", f"s/{_uid()}"
    c = _persistent(ingress.mqtt_port, cid)
    c.subscribe(topic, 1)
    c.close()
    _wait_offline(kafka.bootstrap, cid)
    recs = _session_records(kafka.bootstrap, cid)
    assert recs, "no session record"
    last = json.loads(recs[-1].value)
    assert last["subs"] == {topic: 1}
    assert last["owner"] == ""  # offline
