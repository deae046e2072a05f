"""MQTT 5 packets, the connection's MQTT 5 state and the properties ⇄ headers mapping: pure
functions, list in, list out (the live protocol is tests/test_mqtt5.py)."""

from __future__ import annotations

import pytest

from ingress.wire import codec
from ingress.wire import reason_codes as rc
from ingress.wire.codec import ProtocolError
from ingress.wire.control_packets import connect_level, decode_connect
from ingress.wire.packets5 import (
    decode_ack5,
    decode_disconnect5,
    decode_publish5,
    decode_subscribe5,
    decode_unsubscribe5,
    encode_ack5,
    encode_disconnect5,
    encode_publish5,
    encode_suback5,
)
from ingress.wire.properties import (
    WILL,
    AliasError,
    MalformedPacket,
    Properties,
    decode_properties,
    encode_properties,
)
from ingress.wire.v5 import SubOptions, V5Client, disconnect_code
from ingress.wire.v5_headers import (
    ReservedUserProperty,
    expires_at,
    inbound_headers,
    outbound_properties,
)


def _body(packet: bytes) -> tuple[int, int, bytes]:
    (pkt,) = codec.Framer().feed(packet)
    return pkt.type, pkt.flags, pkt.body


def _connect5(flags: int, rest: bytes, props: Properties | None = None) -> bytes:
    block = encode_properties(props or Properties(), codec.CONNECT)
    return b"\x00\x04MQTT\x05" + bytes((flags,)) + b"\x00\x3c" + block + rest


def test_connect_level_5_reads_properties_and_will_properties() -> None:
    will_block = encode_properties(
        Properties(content_type="text/plain", user_properties=[("k", "v")]), WILL
    )
    rest = b"\x00\x02id" + will_block + b"\x00\x01w" + b"\x00\x03bye"
    info = decode_connect(0, _connect5(0x06, rest, Properties(session_expiry_interval=30)))
    assert info.protocol_level == 5 and info.client_id == "id" and info.clean_session
    assert info.properties is not None and info.properties.session_expiry_interval == 30
    assert info.will_properties is not None
    assert info.will_properties.user_properties == [("k", "v")]
    assert (info.will_topic, info.will_message) == ("w", b"bye")
    assert connect_level(_connect5(0x02, b"\x00\x00")) == 5


def test_connect_5_broken_flags_are_malformed() -> None:
    with pytest.raises(MalformedPacket):
        decode_connect(0, _connect5(0x01, b"\x00\x00"))  # the reserved flag


def test_publish5_round_trip_with_properties() -> None:
    block = encode_properties(Properties(topic_alias=2, content_type="a/b"), codec.PUBLISH)
    data = encode_publish5("t/1", b"payload", 1, 9, True, block, dup=True)
    t, flags, body = _body(data)
    assert t == codec.PUBLISH
    pub = decode_publish5(flags, body)
    assert (pub.topic, pub.qos, pub.packet_id, pub.retain, pub.dup) == ("t/1", 1, 9, True, True)
    assert pub.properties is not None
    assert pub.properties.topic_alias == 2 and pub.properties.content_type == "a/b"
    plain = decode_publish5(0x00, b"\x00\x01t\x00body")
    assert (plain.topic, plain.properties, plain.payload) == ("t", None, b"body")
    assert pub.payload == b"payload"


@pytest.mark.parametrize(
    ("flags", "body", "error"),
    [
        (0x06, b"\x00\x01t\x00\x01\x00", MalformedPacket),  # QoS 3
        (0x08, b"\x00\x01t\x00", MalformedPacket),  # QoS 0 with DUP [MQTT-3.3.1-2]
        (0x02, b"\x00\x01t\x00\x00\x00", ProtocolError),  # packet id 0
        (0x00, b"\x00\x05t", MalformedPacket),  # topic runs past the packet
        (0x00, b"\x00\x01t\x05\x01", MalformedPacket),  # properties run past the packet
    ],
)
def test_publish5_errors(flags: int, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_publish5(flags, body)


def test_acks_omit_code_and_properties_when_there_is_nothing_to_say() -> None:
    assert encode_ack5(codec.PUBACK, 5) == b"\x40\x02\x00\x05"
    t, _, body = _body(encode_ack5(codec.PUBACK, 5, rc.NOT_AUTHORIZED, "denied"))
    assert t == codec.PUBACK and body[:3] == b"\x00\x05\x87"
    props, _ = decode_properties(body, 3, codec.PUBACK)
    assert props.reason_string == "denied"
    assert decode_ack5(b"\x00\x05", codec.PUBACK) == (5, 0)
    assert decode_ack5(b"\x00\x05\x10", codec.PUBACK) == (5, 0x10)
    assert decode_ack5(body, codec.PUBACK) == (5, 0x87)
    assert encode_ack5(codec.PUBREL, 1)[0] == 0x62  # PUBREL keeps its fixed flags


def test_disconnect_both_ways() -> None:
    assert encode_disconnect5(0) == b"\xe0\x00"
    t, _, body = _body(encode_disconnect5(rc.SESSION_TAKEN_OVER, "another connection"))
    assert t == codec.DISCONNECT and body[0] == 0x8E
    code, props = decode_disconnect5(body)
    assert code == 0x8E and props.reason_string == "another connection"
    assert decode_disconnect5(b"") == (0, Properties())
    block = encode_properties(Properties(session_expiry_interval=0), codec.DISCONNECT)
    assert decode_disconnect5(b"\x04" + block)[1].session_expiry_interval == 0


def test_subscribe5_options() -> None:
    block = encode_properties(Properties(subscription_identifiers=[42]), codec.SUBSCRIBE)
    body = b"\x00\x07" + block + b"\x00\x01a" + bytes((0x2D,)) + b"\x00\x01b" + b"\x00"
    pid, props, subs = decode_subscribe5(body)
    assert pid == 7 and props.subscription_identifiers == [42]
    a, b = subs
    # 0x2D = retain handling 2, RAP, no local, QoS 1
    assert (a.qos, a.no_local, a.retain_as_published, a.retain_handling) == (1, True, True, 2)
    assert (b.qos, b.no_local, b.retain_as_published, b.retain_handling) == (0, False, False, 0)
    with pytest.raises(MalformedPacket):
        decode_subscribe5(b"\x00\x07\x00\x00\x01a" + bytes((0x40,)))  # reserved bit
    with pytest.raises(ProtocolError):
        decode_subscribe5(b"\x00\x07\x00\x00\x01a" + bytes((0x30,)))  # retain handling 3
    with pytest.raises(ProtocolError):
        decode_subscribe5(b"\x00\x07\x00")  # no filter
    assert decode_unsubscribe5(b"\x00\x03\x00\x00\x01a\x00\x01b") == (3, ["a", "b"])
    t, _, suback = _body(encode_suback5(7, [1, rc.TOPIC_FILTER_INVALID]))
    assert t == codec.SUBACK and suback == b"\x00\x07\x00\x01\x8f"


def test_topic_aliases() -> None:
    c = V5Client()
    assert c.topic_of("a/b", 1, 4) == "a/b"
    assert c.topic_of("", 1, 4) == "a/b"
    assert c.topic_of("c", 1, 4) == "c"  # an alias may be set again
    assert c.topic_of("plain", None, 4) == "plain"
    with pytest.raises(AliasError):
        c.topic_of("", 5, 4)
    with pytest.raises(ProtocolError):
        c.topic_of("", 2, 4)  # never set
    with pytest.raises(ProtocolError):
        c.topic_of("", None, 4)


def test_subscription_option_lookups() -> None:
    c = V5Client(options={
        "a/#": SubOptions(no_local=True, identifier=3),
        "a/+": SubOptions(retain_as_published=True, identifier=1),
        "b": SubOptions(no_local=True),
    })  # fmt: skip
    filters = {"a/#": 1, "a/+": 1, "b": 0}
    assert c.identifiers("a/x") == [1, 3]
    assert c.identifiers("b") == []
    assert c.local_only("b", filters) is True
    assert c.local_only("a/x", filters) is False  # a/+ is not No Local
    assert c.retain_as_published("a/x", filters) and not c.retain_as_published("b", filters)
    record = c.options_record()
    again = V5Client()
    again.restore_options(record)
    assert again.options == c.options


def test_maximum_packet_size_of_the_client() -> None:
    c = V5Client(max_packet_size=20)
    # 1 fixed byte + 1 length byte + 2 + 1 (topic) + 2 (id) + 1 (no properties) + payload
    assert c.fits("t", b"x" * 12, b"\x00", qos=1)
    assert not c.fits("t", b"x" * 13, b"\x00", qos=1)
    assert V5Client().fits("t", b"x" * 100_000, b"\x00")


def test_disconnect_codes() -> None:
    assert disconnect_code("keepalive_timeout") == rc.KEEP_ALIVE_TIMEOUT
    assert disconnect_code("receive_maximum") == rc.RECEIVE_MAXIMUM_EXCEEDED
    assert disconnect_code(None, MalformedPacket("x")) == rc.MALFORMED_PACKET
    assert disconnect_code(None, ProtocolError("x")) == rc.PROTOCOL_ERROR
    assert disconnect_code(None, AliasError("x")) == rc.TOPIC_ALIAS_INVALID
    assert disconnect_code(None, codec.PacketTooLarge("x")) == rc.PACKET_TOO_LARGE


def test_properties_become_headers_and_back() -> None:
    props = Properties(
        content_type="application/json", response_topic="r/1", correlation_data=b"\xff\x00",
        payload_format_indicator=1, message_expiry_interval=10,
        user_properties=[("a", "1"), ("a", "2"), ("b", "\u00e9")],
    )  # fmt: skip
    h = inbound_headers(props, 1_000_000)
    assert h == [
        ("mqtt.content_type", b"application/json"),
        ("mqtt.response_topic", b"r/1"),
        ("mqtt.correlation_data", b"\xff\x00"),
        ("mqtt.payload_format", b"1"),
        ("mqtt.expires_at_ms", b"1010000"),
        ("a", b"1"),
        ("a", b"2"),
        ("b", "\u00e9".encode()),
    ]
    assert expires_at(h) == 1_010_000
    # Bayou's own headers stay Bayou's; a binary header cannot be a user property.
    record = [("mqtt.topic", b"x"), ("bayou.ingress_ts", b"1"), *h, ("bin", b"\xff")]
    out = outbound_properties(record, 1_004_500)
    assert out.user_properties == [("a", "1"), ("a", "2"), ("b", "\u00e9")]
    assert (out.content_type, out.response_topic, out.correlation_data) == (
        "application/json", "r/1", b"\xff\x00",
    )  # fmt: skip
    assert out.payload_format_indicator == 1
    assert out.message_expiry_interval == 6  # 5.5 s left, rounded up
    assert outbound_properties(h, 1_010_000).message_expiry_interval == 1


def test_reserved_user_properties_are_refused() -> None:
    for name in ("bayou.result_id", "mqtt.topic"):
        with pytest.raises(ReservedUserProperty):
            inbound_headers(Properties(user_properties=[(name, "x")]), 0)


def test_replay_since_values() -> None:
    from ingress.wire.v5 import replay_since_ms

    now = 1_800_000_000_000
    assert replay_since_ms(str(now - 5000), now, 3600) == now - 5000
    # now is 2027-01-15T08:00:00Z
    assert replay_since_ms("2027-01-15T07:59:00+00:00", now, 3600) == now - 60_000
    assert replay_since_ms("2027-01-15T09:59:00+02:00", now, 3600) == now - 60_000
    # Bounded by BAYOU_REPLAY_MAX_SECONDS.
    assert replay_since_ms("0", now, 60) == now - 60_000
    for bad in ("soon", str(now + 1), "2026-01-01T00:00:00"):
        with pytest.raises(ValueError):
            replay_since_ms(bad, now, 60)
    with pytest.raises(ValueError):
        replay_since_ms("0", now, 0)


def test_mqtt5_allows_a_password_without_a_user_name() -> None:
    """§3.1.2.9: unlike 3.1.1 [MQTT-3.1.2-22], MQTT 5 lets a token come as the password alone."""
    info = decode_connect(0, _connect5(0x42, b"\x00\x02id\x00\x03tok"))
    assert (info.username, info.password) == (None, b"tok")
    with pytest.raises(ProtocolError):
        decode_connect(0, b"\x00\x04MQTT\x04\x42\x00\x3c\x00\x02id\x00\x03tok")


def test_sessions_of_a_node_that_died_expire_from_their_last_checkpoint() -> None:
    from ingress.state.sessions import SessionState

    left = SessionState("a", expiry_s=10, gone_ms=1_000)
    assert not left.expired(10_999) and left.expired(11_001)
    crashed = SessionState("b", expiry_s=10, seen_ms=1_000)  # no disconnect written
    assert not crashed.expired(40_000) and crashed.expired(41_001)  # + 30 s grace
    again = SessionState.from_bytes("b", crashed.to_bytes())
    assert (again.expiry_s, again.seen_ms, again.gone_ms) == (10, 1_000, 0)
    assert not SessionState("c").expired(10**12)  # 3.1.1: never
    assert not SessionState("d", expiry_s=0xFFFF_FFFF, gone_ms=1).expired(10**12)


def test_reason_strings_give_way_to_the_clients_maximum_packet_size() -> None:
    assert V5Client().reason("x" * 300) == "x" * 300
    assert V5Client(max_packet_size=64).reason("x" * 60) is None
    assert V5Client(max_packet_size=64).reason("short") == "short"
    assert V5Client(problem_info=False).reason("x") is None
    _, _, body = _body(encode_disconnect5(rc.PROTOCOL_ERROR, "y" * 100_000))
    code, props = decode_disconnect5(body)  # cut to a few hundred characters, still sent
    assert code == rc.PROTOCOL_ERROR and props.reason_string is not None
    assert len(props.reason_string) <= 256


def test_a_record_no_mqtt_packet_can_carry_loses_only_that_property() -> None:
    record = [("big", b"x" * 70_000), ("ok", b"1"), ("mqtt.expires_at_ms", b"%d" % 10**15)]
    out = outbound_properties(record, 0)
    assert out.user_properties == [("ok", "1")]
    assert out.message_expiry_interval == 0xFFFF_FFFF
    encode_properties(out, codec.PUBLISH)  # encodes
