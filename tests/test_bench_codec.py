"""Unit tests for the benchmark load generator's MQTT codec (pure functions, no sockets)."""

from __future__ import annotations

import pytest

from benchmarks import codec


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length_round_trip(value: int, encoded: bytes) -> None:
    assert codec.encode_remaining_length(value) == encoded
    assert codec.decode_remaining_length(b"\x30" + encoded, 1) == (value, len(encoded))


def test_remaining_length_out_of_range() -> None:
    with pytest.raises(ValueError):
        codec.encode_remaining_length(268_435_456)
    with pytest.raises(ValueError):
        codec.encode_remaining_length(-1)
    with pytest.raises(ValueError):
        codec.decode_remaining_length(b"\xff\xff\xff\xff\x01", 0)


def test_remaining_length_incomplete() -> None:
    assert codec.decode_remaining_length(b"\x80", 0) == (0, 0)
    assert codec.decode_remaining_length(b"", 0) == (0, 0)


@pytest.mark.parametrize("qos", [0, 1])
def test_template_batch_parses_back(qos: int) -> None:
    tpl = codec.publish_template("bench/a/0", qos, 100)
    count = 5
    buf = bytearray(tpl.packet * count)
    codec.fill_batch(tpl, buf, count, ts_ns=123_456_789, first_seq=40, first_packet_id=65534)
    packets, used = codec.split_packets(buf)
    assert used == len(buf)
    assert len(packets) == count
    for i, (first, start, end) in enumerate(packets):
        assert first >> 4 == codec.PUBLISH
        pub = codec.parse_publish(first & 0x0F, bytes(buf[start:end]))
        assert pub.topic == "bench/a/0"
        assert pub.qos == qos
        assert len(pub.payload) == 100
        assert codec.payload_header(buf, start, qos) == (123_456_789, 40 + i)
        if qos:
            # Packet ids wrap from 65535 to 1, never 0.
            assert pub.packet_id == [65534, 65535, 1, 2, 3][i]
        else:
            assert pub.packet_id == 0


def test_template_matches_slow_encoder() -> None:
    tpl = codec.publish_template("t", 1, 16)
    buf = bytearray(tpl.packet)
    codec.fill_batch(tpl, buf, 1, ts_ns=7, first_seq=9, first_packet_id=42)
    payload = codec.PAYLOAD_HEADER.pack(7, 9)
    assert bytes(buf) == codec.encode_publish("t", payload, qos=1, packet_id=42)


def test_large_publish_uses_multibyte_length() -> None:
    payload = b"y" * 20_000
    packet = codec.encode_publish("big", payload, qos=0)
    assert packet[1] & 0x80
    packets, used = codec.split_packets(bytearray(packet + packet[:10]))
    assert used == len(packet)
    (first, start, end) = packets[0]
    assert codec.parse_publish(first & 0x0F, packet[start:end]).payload == payload


def test_split_packets_leaves_partial_tail() -> None:
    stream = codec.encode_puback(7) + codec.encode_puback(8)
    buf = bytearray(stream[:5])
    packets, used = codec.split_packets(buf)
    assert used == 4
    assert [(f, bytes(buf[s:e])) for f, s, e in packets] == [(0x40, b"\x00\x07")]


def test_connect_subscribe_encoding() -> None:
    connect = codec.encode_connect("c1", keepalive=60)
    assert connect == b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02c1"
    sub = codec.encode_subscribe(1, "a/#", 1)
    assert sub == b"\x82\x08\x00\x01\x00\x03a/#\x01"


def test_next_packet_id_cycles() -> None:
    assert codec.next_packet_id(1, 1) == 2
    assert codec.next_packet_id(65535, 1) == 1
    assert codec.next_packet_id(65534, 3) == 2
    assert codec.next_packet_id(1, 65535) == 1


def test_template_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        codec.publish_template("t", 3)
    with pytest.raises(ValueError):
        codec.publish_template("t", 0, payload_size=8)


@pytest.mark.parametrize(
    ("packet_type", "expected"),
    [
        (codec.PUBACK, b"\x40\x02\x01\x02"),
        (codec.PUBREC, b"\x50\x02\x01\x02"),
        (codec.PUBREL, b"\x62\x02\x01\x02"),  # PUBREL's fixed-header flags are 0010
        (codec.PUBCOMP, b"\x70\x02\x01\x02"),
    ],
)
def test_encode_ack(packet_type: int, expected: bytes) -> None:
    assert codec.encode_ack(packet_type, 0x0102) == expected


def test_encode_ack_rejects_other_types() -> None:
    with pytest.raises(ValueError):
        codec.encode_ack(codec.PUBLISH, 1)


@pytest.mark.parametrize(
    ("first_byte", "reply"),
    [
        (0x30, None),  # QoS 0 PUBLISH
        (0x32, codec.PUBACK),  # QoS 1 PUBLISH
        (0x3B, codec.PUBACK),  # QoS 1, DUP and RETAIN set
        (0x34, codec.PUBREC),  # QoS 2 PUBLISH
        (0x3C, codec.PUBREC),  # QoS 2, DUP
        (0x50, codec.PUBREL),  # PUBREC
        (0x62, codec.PUBCOMP),  # PUBREL
        (0x40, None),  # PUBACK ends a QoS 1 flow
        (0x70, None),  # PUBCOMP ends a QoS 2 flow
        (0x20, None),  # CONNACK
    ],
)
def test_ack_reply(first_byte: int, reply: int | None) -> None:
    assert codec.ack_reply(first_byte) == reply


def test_qos2_template_parses_back() -> None:
    tpl = codec.publish_template("bench/q2", 2, 32)
    buf = bytearray(tpl.packet * 2)
    codec.fill_batch(tpl, buf, 2, ts_ns=5, first_seq=1, first_packet_id=65535)
    packets, used = codec.split_packets(buf)
    assert used == len(buf)
    pubs = [codec.parse_publish(f & 0x0F, bytes(buf[s:e])) for f, s, e in packets]
    assert [(p.qos, p.packet_id) for p in pubs] == [(2, 65535), (2, 1)]
    assert [codec.payload_header(buf, s, 2) for _f, s, _e in packets] == [(5, 1), (5, 2)]
    assert codec.ack_reply(packets[0][0]) == codec.PUBREC


def test_template_rejects_qos_3() -> None:
    with pytest.raises(ValueError):
        codec.publish_template("t", 3)


def test_persistent_connect_clears_clean_session_flag() -> None:
    clean = codec.encode_connect("dev-1", 60)
    persistent = codec.encode_connect("dev-1", 60, clean_session=False)
    # Connect flags follow the 6-byte protocol name and the level byte.
    assert clean[2 + 6 + 1] == 0x02
    assert persistent[2 + 6 + 1] == 0x00


# MQTT 5 (protocol level 5): the generator's packets carry an empty property block.


def test_v5_connect_encoding() -> None:
    connect = codec.encode_connect("c1", keepalive=60, protocol=5)
    # Level 5, clean start 0x02, keep-alive, property length 0, then the client id.
    assert connect == b"\x10\x0f\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x02c1"
    # 3.1.1 is unchanged by the parameter.
    assert codec.encode_connect("c1", 60, protocol=4) == codec.encode_connect("c1", 60)
    with pytest.raises(ValueError):
        codec.encode_connect("c1", protocol=3)


def test_v5_connect_allows_password_without_username() -> None:
    connect = codec.encode_connect("c", 60, password=b"pw", protocol=5)
    assert connect[2 + 6 + 1] == 0x42  # clean start + password flag
    assert connect.endswith(b"\x00\x01c\x00\x02pw")
    with pytest.raises(ValueError):
        codec.encode_connect("c", 60, password=b"pw")


def test_v5_subscribe_encoding() -> None:
    sub = codec.encode_subscribe(1, "a/#", 1, protocol=5)
    # Packet id, property length 0, filter, subscription options (= QoS).
    assert sub == b"\x82\x09\x00\x01\x00\x00\x03a/#\x01"


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_v5_template_bytes(qos: int) -> None:
    tpl = codec.publish_template("t", qos, 16, protocol=5)
    v311 = codec.publish_template("t", qos, 16)
    assert tpl.size == v311.size + 1
    assert tpl.payload_offset == v311.payload_offset + 1
    assert tpl.packet_id_offset == v311.packet_id_offset
    buf = bytearray(tpl.packet)
    codec.fill_batch(tpl, buf, 1, ts_ns=7, first_seq=9, first_packet_id=42)
    pid = b"\x00\x2a" if qos else b""
    header = codec.PAYLOAD_HEADER.pack(7, 9)
    assert bytes(buf) == bytes([0x30 | qos << 1, 3 + len(pid) + 1 + 16]) + b"\x00\x01t" + pid + (
        b"\x00" + header
    )
    assert bytes(buf) == codec.encode_publish("t", header, qos, 42, protocol=5)


@pytest.mark.parametrize("qos", [0, 1])
def test_v5_template_batch_parses_back(qos: int) -> None:
    tpl = codec.publish_template("bench/a/0", qos, 100, protocol=5)
    buf = bytearray(tpl.packet * 3)
    codec.fill_batch(tpl, buf, 3, ts_ns=55, first_seq=10, first_packet_id=65535)
    packets, used = codec.split_packets(buf)
    assert used == len(buf) and len(packets) == 3
    for i, (first, start, end) in enumerate(packets):
        pub = codec.parse_publish(first & 0x0F, bytes(buf[start:end]), protocol=5)
        assert (pub.topic, pub.qos, len(pub.payload)) == ("bench/a/0", qos, 100)
        assert pub.packet_id == ([65535, 1, 2][i] if qos else 0)
        assert codec.payload_header_v5(buf, start, qos) == (55, 10 + i)


# One user property "k" = 122 x "v": 1 + 3 + 2 + 122 = 128 bytes of properties.
_LONG_PROPS = b"\x80\x01\x26\x00\x01k\x00\x7a" + b"v" * 0x7A


def _publish5(props: bytes, qos: int = 1, packet_id: int = 3) -> tuple[bytes, bytes]:
    """A PUBLISH as a broker may send it (with ``props`` as its property block), and its
    payload."""
    payload = codec.PAYLOAD_HEADER.pack(1234, 56) + b"pad"
    pid = packet_id.to_bytes(2, "big") if qos else b""
    body = b"\x00\x03a/b" + pid + props + payload
    return bytes([0x30 | qos << 1]) + codec.encode_remaining_length(len(body)) + body, payload


@pytest.mark.parametrize(
    "props",
    [
        b"\x00",  # no properties, as Bayou sends
        b"\x02\x01\x01",  # a 2-byte block: payload format indicator = 1
        b"\x05\x02\x00\x00\x0e\x10",  # message expiry interval 3600 s
        _LONG_PROPS,  # 128 bytes: a two-byte property length
    ],
)
@pytest.mark.parametrize("qos", [0, 1])
def test_v5_publish_parser_skips_properties(props: bytes, qos: int) -> None:
    packet, payload = _publish5(props, qos)
    packets, used = codec.split_packets(bytearray(packet))
    assert used == len(packet)
    ((first, start, end),) = packets
    pub = codec.parse_publish(first & 0x0F, packet[start:end], protocol=5)
    assert pub.topic == "a/b" and pub.qos == qos
    assert pub.packet_id == (3 if qos else 0)
    assert pub.payload == payload
    assert codec.payload_header_v5(packet, start, qos) == (1234, 56)
    assert codec.payload_header_for(5) is codec.payload_header_v5


def test_v5_publish_parser_rejects_truncated_properties() -> None:
    packet, _payload = _publish5(b"\x02\x01")  # says 2 bytes of properties; the body is short
    with pytest.raises(ValueError):
        codec.parse_publish(0x02, packet[2:8], protocol=5)


def test_payload_header_for_3_1_1_is_the_plain_reader() -> None:
    assert codec.payload_header_for(4) is codec.payload_header
    with pytest.raises(ValueError):
        codec.payload_header_for(6)


def test_v5_acks_with_reason_code_and_properties_split() -> None:
    # A PUBACK with reason code 0x10 (no matching subscribers) and a reason string property:
    # longer than 2 bytes, still one packet whose body starts with the packet id.
    long_ack = b"\x40\x08\x00\x07\x10\x04\x1f\x00\x01x"
    # mosquitto's PUBACK for a publish nobody is subscribed to: reason code 0x10, no properties.
    mosquitto_ack = b"\x40\x03\x00\x09\x10"
    stream = bytearray(long_ack + codec.encode_puback(8) + mosquitto_ack)
    packets, used = codec.split_packets(stream)
    assert used == len(stream)
    ids = [(f, (stream[s] << 8) | stream[s + 1]) for f, s, _e in packets]
    assert ids == [(0x40, 7), (0x40, 8), (0x40, 9)]


def test_suback_codes() -> None:
    assert codec.suback_codes(b"\x00\x01\x01") == b"\x01"
    assert codec.suback_codes(b"\x00\x01\x00\x01", protocol=5) == b"\x01"
    # Properties (a reason string) before the reason codes are skipped.
    assert codec.suback_codes(b"\x00\x01\x04\x1f\x00\x01x\x87", protocol=5) == b"\x87"
