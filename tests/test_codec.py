"""The incremental MQTT framer and hot-packet codec, pure."""

import pytest

from ingress.wire import codec
from ingress.wire.codec import Framer, ProtocolError
from ingress.wire.control_packets import decode_connect, decode_subscribe


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_mqtt_2_2_3_remaining_length(n: int, encoded: bytes) -> None:
    assert codec.encode_remaining_length(n) == encoded


def test_publish_round_trip_byte_by_byte() -> None:
    pkt = codec.encode_publish("a/b", b"x" * 300, qos=1, packet_id=42, retain=True)
    framer = Framer()
    got = []
    for i in range(len(pkt)):  # worst case: one byte per read
        got += framer.feed(pkt[i : i + 1])
    assert len(got) == 1
    assert codec.decode_publish(got[0].flags, got[0].body) == (
        "a/b", 1, 42, True, False, b"x" * 300,
    )  # fmt: skip


def test_several_packets_in_one_read() -> None:
    data = codec.encode_publish("t", b"1") + b"\xc0\x00" + codec.encode_publish("t", b"2")
    pkts = Framer().feed(data)
    assert [p.type for p in pkts] == [codec.PUBLISH, codec.PINGREQ, codec.PUBLISH]


def test_over_long_remaining_length_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        Framer().feed(b"\x30\xff\xff\xff\xff\x01")


def test_packet_above_max_size_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        Framer(max_size=10).feed(codec.encode_publish("t", b"x" * 20))


def test_max_size_counts_the_whole_packet_fixed_header_included() -> None:
    pkt = codec.encode_publish("t", b"x" * 200)  # 1 + 2 length bytes + 203
    assert len(pkt) == 206
    assert len(Framer(max_size=206).feed(pkt)) == 1
    with pytest.raises(ProtocolError, match="packet of 206 bytes exceeds the maximum 205"):
        Framer(max_size=205).feed(pkt[:3])  # refused on its header alone


def test_publish_parts_splice_packet_id() -> None:
    head, payload = codec.publish_parts("a", b"pp", 1)
    assert head + (7).to_bytes(2, "big") + payload == codec.encode_publish("a", b"pp", 1, 7)


def test_qos1_publish_without_packet_id_is_rejected() -> None:
    with pytest.raises(ProtocolError):
        codec.decode_publish(0x02, b"\x00\x01a")


def test_connect_and_subscribe_decode() -> None:
    body = b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x03dev"
    info = decode_connect(0, body)
    assert (info.client_id, info.clean_session, info.keep_alive) == ("dev", True, 60)
    assert decode_subscribe(2, b"\x00\x05\x00\x03a/#\x01") == (5, [("a/#", 1)])


def test_garbage_connect_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_connect(0, b"\x00\x04MQ")
