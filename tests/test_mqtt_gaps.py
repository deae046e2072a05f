"""The last MQTT 3.1.1 gaps: hostile strings, CONNECT flag rules, 65,535-byte topics, the will
on takeover, QoS 2 resends across connections, and clearing many retained messages.

Real sockets against real `bayou ingress` processes on the embedded Kafka; tests are named
after the OASIS normative statements they prove. Kafka is read back with aiokafka, an
independent client.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.processes import stop_process
from ingress.wire import codec
from tests.conftest import Proc, start_ingress
from tests.helpers import Mqtt, read_topic, wait_until
from tests.test_mqtt_conformance import Raw, _subscribe_packet, _unsubscribe_packet

pytestmark = pytest.mark.integration

# Ingress processes these tests start let anonymous clients in (authentication is on by
# default once it is wired).
ANON = {"BAYOU_ALLOW_ANONYMOUS": "true"}


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _s(raw: bytes) -> bytes:
    return len(raw).to_bytes(2, "big") + raw


def _connect(
    client_id: bytes,
    *,
    flags: int = 0x02,
    will: tuple[bytes, bytes] | None = None,
    username: bytes | None = None,
    password: bytes | None = None,
    extra: bytes = b"",
) -> bytes:
    """A CONNECT with raw field bytes and raw flags (flags for the fields given are added)."""
    payload = _s(client_id)
    if will is not None:
        payload += _s(will[0]) + _s(will[1])
    if username is not None:
        flags |= 0x80
        payload += _s(username)
    if password is not None:
        flags |= 0x40
        payload += _s(password)
    body = b"\x00\x04MQTT\x04" + bytes((flags,)) + (30).to_bytes(2, "big") + payload + extra
    return b"\x10" + codec.encode_remaining_length(len(body)) + body


def _refused(port: int, packet: bytes) -> bool:
    """Send ``packet`` first thing; True if the node closes without accepting it."""
    raw = Raw(port)
    try:
        raw.send(packet)
        raw.sock.settimeout(5)
        try:
            first = raw.sock.recv(4)
        except ConnectionResetError:
            first = b""
        assert first != b"\x20\x02\x00\x00", "CONNECT accepted"
        return first == b"" or raw.closed_by_node()
    finally:
        raw.close()


def _connected(port: int, client_id: str, clean: bool = True) -> Raw:
    raw = Raw(port)
    raw.send(_connect(client_id.encode(), flags=0x02 if clean else 0x00))
    pkt = raw.packet()
    assert pkt.type == codec.CONNACK and pkt.body[1] == 0, pkt
    return raw


# --- [MQTT-1.5.3-1], [MQTT-1.5.3-2]: ill-formed UTF-8 and U+0000 close the connection -------

BAD_STRINGS = {
    "invalid byte": b"a\xffb",
    "encoded surrogate": b"a\xed\xa0\x80",  # U+D800 in UTF-8 form
    "overlong": b"\xc0\xaf",
    "U+0000": b"a\x00b",
}


@pytest.mark.parametrize("bad", BAD_STRINGS.values(), ids=BAD_STRINGS.keys())
@pytest.mark.parametrize("field", ["client id", "user name", "will topic"])
def test_mqtt_1_5_3_1_and_2_bad_string_in_connect_closes(
    ingress: Proc, field: str, bad: bytes
) -> None:
    cid = f"utf-{_uid()}".encode()
    if field == "client id":
        packet = _connect(bad)
    elif field == "user name":
        packet = _connect(cid, username=bad)
    else:
        packet = _connect(cid, flags=0x02 | 0x04, will=(bad, b"gone"))
    assert _refused(ingress.mqtt_port, packet)


@pytest.mark.parametrize("bad", BAD_STRINGS.values(), ids=BAD_STRINGS.keys())
@pytest.mark.parametrize("packet", ["SUBSCRIBE", "UNSUBSCRIBE", "PUBLISH"])
def test_mqtt_1_5_3_1_and_2_bad_filter_or_topic_closes(
    ingress: Proc, packet: str, bad: bytes
) -> None:
    raw = _connected(ingress.mqtt_port, f"utf-{_uid()}")
    try:
        if packet == "SUBSCRIBE":
            body = b"\x00\x01" + _s(b"ok/" + bad) + b"\x01"
            raw.send(b"\x82" + codec.encode_remaining_length(len(body)) + body)
        elif packet == "UNSUBSCRIBE":
            body = b"\x00\x01" + _s(b"ok/" + bad)
            raw.send(b"\xa2" + codec.encode_remaining_length(len(body)) + body)
        else:
            body = _s(b"ok/" + bad) + b"\x00\x01payload"
            raw.send(b"\x32" + codec.encode_remaining_length(len(body)) + body)
        # Closed without a SUBACK, UNSUBACK or PUBACK.
        raw.sock.settimeout(5)
        try:
            assert raw.sock.recv(4096) == b""
        except ConnectionResetError:
            pass
    finally:
        raw.close()


def test_mqtt_3_1_3_5_password_is_binary_data_not_utf8(ingress: Proc) -> None:
    # The password is binary data (§3.1.3.5): bytes that are not UTF-8 and U+0000 are fine.
    raw = Raw(ingress.mqtt_port)
    try:
        raw.send(_connect(f"pw-{_uid()}".encode(), username=b"u", password=b"\xff\x00\xfe"))
        assert raw.packet().body == b"\x00\x00"
        raw.send(b"\xc0\x00")
        assert raw.packet().type == codec.PINGRESP
    finally:
        raw.close()


@pytest.mark.parametrize("packet", [b"\xc1\x00", b"\xe0\x01\x00", b"\x42\x02\x00\x01"])
def test_mqtt_2_2_2_2_invalid_fixed_header_flags_close(ingress: Proc, packet: bytes) -> None:
    # PINGREQ with a flag set, DISCONNECT with a body, PUBACK with a flag set.
    raw = _connected(ingress.mqtt_port, f"ff-{_uid()}")
    try:
        raw.send(packet)
        assert raw.closed_by_node()
    finally:
        raw.close()


# --- [MQTT-3.1.2-9], [MQTT-3.1.2-11] .. [MQTT-3.1.2-15], [MQTT-3.1.2-22]: CONNECT flags ---


FLAG_CASES = {
    # [MQTT-3.1.2-9]: will flag set, but the payload ends after the client id.
    "3.1.2-9 will flag without will topic and message": _connect(b"f", flags=0x06),
    # [MQTT-3.1.2-11], [MQTT-3.1.2-13]: will QoS 1 or 2 without the will flag.
    "3.1.2-13 will qos 1 without will flag": _connect(b"f", flags=0x02 | 0x08),
    "3.1.2-13 will qos 2 without will flag": _connect(b"f", flags=0x02 | 0x10),
    # [MQTT-3.1.2-14]: will QoS 3.
    "3.1.2-14 will qos 3": _connect(b"f", flags=0x02 | 0x04 | 0x18, will=(b"w", b"m")),
    # [MQTT-3.1.2-11], [MQTT-3.1.2-15]: will retain without the will flag.
    "3.1.2-15 will retain without will flag": _connect(b"f", flags=0x02 | 0x20),
    # [MQTT-3.1.2-11]: will topic and message present without the will flag.
    "3.1.2-11 will fields without will flag": _connect(b"f", extra=_s(b"w") + _s(b"m")),
    # [MQTT-3.1.2-22]: a password without a user name.
    "3.1.2-22 password without user name": _connect(b"f", flags=0x02 | 0x40, extra=_s(b"pw")),
}


@pytest.mark.parametrize("packet", FLAG_CASES.values(), ids=FLAG_CASES.keys())
def test_mqtt_3_1_2_9_to_15_and_22_broken_connect_flags_close(ingress: Proc, packet: bytes) -> None:
    assert _refused(ingress.mqtt_port, packet)


# --- topic names and filters of 65,535 bytes [MQTT-4.7.3-3] ---------------------------------


def test_mqtt_4_7_3_3_topics_and_filters_of_65535_bytes_work(ingress: Proc) -> None:
    head = f"long/{_uid()}/"
    topic = head + "x" * (65535 - len(head))
    assert len(topic.encode()) == 65535
    sub = _connected(ingress.mqtt_port, f"ls-{_uid()}")
    wild = _connected(ingress.mqtt_port, f"lw-{_uid()}")
    pub = _connected(ingress.mqtt_port, f"lp-{_uid()}")
    try:
        sub.send(_subscribe_packet(1, [(topic, 1)]))  # the exact 65,535-byte filter
        assert sub.packet().body == b"\x00\x01\x01"
        wild.send(_subscribe_packet(2, [(head + "#", 1)]))
        assert wild.packet().body == b"\x00\x02\x01"
        pub.send(codec.encode_publish(topic, b"far", qos=1, packet_id=3, retain=True))
        assert pub.packet().body == b"\x00\x03"  # PUBACK: in Kafka
        for raw in (sub, wild):
            got_topic, qos, pid, _retain, _dup, payload = codec.decode_publish(
                *(lambda p: (p.flags, p.body))(raw.packet())
            )
            assert (got_topic, qos, payload) == (topic, 1, b"far")
            raw.send(codec.encode_ack(codec.PUBACK, pid))
        # The retained copy comes back to a new subscription too, and unsubscribing works.
        late = _connected(ingress.mqtt_port, f"ll-{_uid()}")
        try:
            late.send(_subscribe_packet(4, [(topic, 0)]))
            assert late.packet().body == b"\x00\x04\x00"
            assert codec.decode_publish(*(lambda p: (p.flags, p.body))(late.packet()))[0] == topic
            late.send(_unsubscribe_packet(5, [topic]))
            assert late.packet().body == b"\x00\x05"
        finally:
            late.close()
        pub.send(codec.encode_publish(topic, b"", qos=1, packet_id=6, retain=True))  # clear it
        assert pub.packet().body == b"\x00\x06"
    finally:
        for raw in (sub, wild, pub):
            raw.close()


# --- [MQTT-3.1.4-2]: the will of a connection taken over is published ------------------------


def _will_connect(client_id: str, will_topic: str, payload: bytes) -> bytes:
    # Will QoS 1, persistent session: a takeover keeps the session, not the will.
    return _connect(client_id.encode(), flags=0x04 | 0x08, will=(will_topic.encode(), payload))


@pytest.mark.parametrize("where", ["same node", "other node"])
def test_mqtt_3_1_4_2_takeover_publishes_the_old_connections_will(
    kafka: EmbeddedKafka, ingress: Proc, tmp_path: Path, where: str
) -> None:
    other = ingress if where == "same node" else start_ingress(
        kafka.bootstrap, tmp_path / "b.log", **ANON
    )  # fmt: skip
    try:
        cid, will_topic = f"tw-{_uid()}", f"will/{_uid()}"
        watch = Mqtt(ingress.mqtt_port, f"watch-{_uid()}").connect()
        try:
            watch.subscribe(will_topic, 1)
            old = Raw(ingress.mqtt_port)
            old.send(_will_connect(cid, will_topic, b"taken-over"))
            assert old.packet().body[1] == 0
            new = Raw(other.mqtt_port)
            new.send(_connect(cid.encode(), flags=0x00))  # the same client id, no will
            assert new.packet().body[1] == 0
            assert old.closed_by_node()  # [MQTT-3.1.4-2]
            m = watch.expect(lambda m: m.topic == will_topic)
            assert (m.payload, m.qos) == (b"taken-over", 1)
            # The new connection is not affected, and has no will of its own to send.
            new.send(b"\xc0\x00")
            assert new.packet().type == codec.PINGRESP
            new.send(b"\xe0\x00")
            old.close()
            new.close()
        finally:
            watch.close()
    finally:
        if other is not ingress:
            stop_process(other.proc)


# --- [MQTT-4.3.3-2]: a QoS 2 PUBLISH resent with DUP is written to Kafka once ---------------


def _messages(bootstrap: str, topic: str) -> list[bytes | None]:
    return [r.value for r in read_topic(bootstrap, "bayou.messages") if r.key == topic.encode()]


def test_mqtt_4_3_3_2_resend_before_pubrec_is_written_once(
    kafka: EmbeddedKafka, ingress: Proc
) -> None:
    topic = f"q2dup/{_uid()}"
    raw = _connected(ingress.mqtt_port, f"q2-{_uid()}")
    try:
        publish = codec.encode_publish(topic, b"once", qos=2, packet_id=9)
        dup = bytes((publish[0] | 0x08,)) + publish[1:]
        raw.send(publish + dup)  # resent before the node could answer the first
        assert raw.packet().body == b"\x00\x09"  # one PUBREC
        raw.send(codec.encode_ack(codec.PUBREL, 9))
        pkt = raw.packet()
        assert (pkt.type, pkt.body) == (codec.PUBCOMP, b"\x00\x09")
    finally:
        raw.close()
    assert _messages(kafka.bootstrap, topic) == [b"once"]


def _session_offline(bootstrap: str, client_id: str) -> bool:
    recs = [r for r in read_topic(bootstrap, "bayou.sessions") if r.key == client_id.encode()]
    return bool(recs) and recs[-1].value is not None and not json.loads(recs[-1].value)["owner"]


@pytest.mark.parametrize("where", ["same node", "other node"])
def test_mqtt_4_3_3_2_resend_on_a_new_connection_of_a_persistent_session_is_written_once(
    kafka: EmbeddedKafka, ingress: Proc, tmp_path: Path, where: str
) -> None:
    topic, cid = f"q2dup/{_uid()}", f"q2p-{_uid()}"
    publish = codec.encode_publish(topic, b"exactly-once", qos=2, packet_id=11)
    first = _connected(ingress.mqtt_port, cid, clean=False)
    first.send(publish)
    assert first.packet().body == b"\x00\x0b"  # PUBREC: in Kafka
    first.close()  # gone before PUBREL: the client resends the PUBLISH, DUP set
    wait_until(lambda: _session_offline(kafka.bootstrap, cid), 20, f"session of {cid} saved")
    other = ingress if where == "same node" else start_ingress(
        kafka.bootstrap, tmp_path / "b.log", **ANON
    )  # fmt: skip
    try:
        raw = Raw(other.mqtt_port)
        try:
            raw.send(_connect(cid.encode(), flags=0x00))
            assert raw.packet().body == b"\x01\x00"  # session present
            raw.send(bytes((publish[0] | 0x08,)) + publish[1:])
            assert raw.packet().body == b"\x00\x0b"  # PUBREC again, nothing written
            raw.send(codec.encode_ack(codec.PUBREL, 11))
            pkt = raw.packet()
            assert (pkt.type, pkt.body) == (codec.PUBCOMP, b"\x00\x0b")
            raw.send(b"\xe0\x00")
        finally:
            raw.close()
    finally:
        if other is not ingress:
            stop_process(other.proc)
    # Neither twice nor lost, read back with an independent client.
    assert _messages(kafka.bootstrap, topic) == [b"exactly-once"]


def test_mqtt_4_3_3_2_resend_after_the_connection_dropped_before_pubrec_is_written_once(
    kafka: EmbeddedKafka, ingress: Proc
) -> None:
    # The connection goes before the node could answer PUBREC: the client does not know
    # whether the node has the message, and resends it on its next connection, DUP set.
    topic, cid = f"q2dup/{_uid()}", f"q2d-{_uid()}"
    publish = codec.encode_publish(topic, b"dropped-once", qos=2, packet_id=12)
    first = _connected(ingress.mqtt_port, cid, clean=False)
    first.send(publish)
    first.close()
    wait_until(lambda: _session_offline(kafka.bootstrap, cid), 20, f"session of {cid} saved")
    raw = Raw(ingress.mqtt_port)
    try:
        raw.send(_connect(cid.encode(), flags=0x00))
        assert raw.packet().body == b"\x01\x00"  # session present
        raw.send(bytes((publish[0] | 0x08,)) + publish[1:])
        assert raw.packet().body == b"\x00\x0c"  # PUBREC
        raw.send(codec.encode_ack(codec.PUBREL, 12))
        assert raw.packet().type == codec.PUBCOMP
        raw.send(b"\xe0\x00")
    finally:
        raw.close()
    assert _messages(kafka.bootstrap, topic) == [b"dropped-once"]


# --- [MQTT-3.3.1-10], [MQTT-3.3.1-11]: clearing many retained messages leaves none ----------


def _retained_on_subscribe(port: int, quiet_s: float = 2.0) -> list[str]:
    """Topics of the retained messages a new subscriber to ``#`` gets (until ``quiet_s``)."""
    raw = _connected(port, f"all-{_uid()}")
    try:
        raw.send(_subscribe_packet(1, [("#", 0)]))
        assert raw.packet().type == codec.SUBACK
        got: list[str] = []
        while True:
            try:
                pkt = raw.packet(timeout=quiet_s)
            except TimeoutError:
                return got
            got.append(codec.decode_publish(pkt.flags, pkt.body)[0])
    finally:
        raw.close()


def test_mqtt_3_3_1_10_clearing_many_retained_in_any_order_leaves_none(
    fresh_kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    rng = random.Random(9)  # a fixed shuffle: reproducible
    node = start_ingress(fresh_kafka.bootstrap, tmp_path / "a.log", **ANON)
    try:
        topics = [f"ret/{i}" for i in range(200)]
        # Set 200, then clear them shuffled; a third are cleared twice, a quarter go through
        # set-clear-set-clear; QoS 0 and 1 mixed (they reach the node's store differently).
        ops: list[tuple[str, bytes]] = [(t, b"v1") for t in topics]
        order = topics[:]
        rng.shuffle(order)
        ops += [(t, b"") for t in order]
        ops += [(t, b"") for t in rng.sample(topics, 66)]
        for t in rng.sample(topics, 50):
            ops += [(t, b"v2"), (t, b""), (t, b"v3"), (t, b"")]
        pub = _connected(node.mqtt_port, f"rp-{_uid()}")
        try:
            qos1 = 0
            for i, (t, payload) in enumerate(ops):
                qos = i % 2
                pub.send(codec.encode_publish(t, payload, qos, (i % 65535) + 1, retain=True))
                qos1 += qos
            for _ in range(qos1):  # every QoS 1 PUBACK: all of them are in Kafka
                assert pub.packet().type == codec.PUBACK
        finally:
            pub.close()
        assert _retained_on_subscribe(node.mqtt_port) == []
        later = start_ingress(fresh_kafka.bootstrap, tmp_path / "b.log", **ANON)
        try:
            assert _retained_on_subscribe(later.mqtt_port) == []
        finally:
            stop_process(later.proc)
        # The state settled, on the first node too (not only right after the PUBACKs).
        assert _retained_on_subscribe(node.mqtt_port, quiet_s=1.0) == []
    finally:
        stop_process(node.proc)
