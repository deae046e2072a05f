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
