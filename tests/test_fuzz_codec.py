"""Property-based fuzzing of the MQTT decoder (hypothesis; profiles in tests/conftest.py).

The framer and every decoder get arbitrary bytes, split arbitrarily: the only exception they
may raise is ProtocolError. Valid packets, built from strategies, round-trip through
encode → framer → decode. Crashes found here stay as explicit regression tests at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingress.wire import codec
from ingress.wire.codec import Framer, ProtocolError
from ingress.wire.control_packets import (
    ConnectInfo,
    decode_connect,
    decode_subscribe,
    decode_unsubscribe,
)

# 600 examples per property keep the file well under 30 s on a slow machine.
FUZZ = settings(max_examples=600)

# MQTT strings: any Unicode text but U+0000 and the surrogates, which UTF-8 cannot encode.
_chars = st.characters(codec="utf-8", exclude_characters="\x00")
mqtt_text = st.text(_chars, max_size=40)
mqtt_text_nonempty = st.text(_chars, min_size=1, max_size=40)
packet_id = st.integers(1, 65535)


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


def _feed_all(framer: Framer, pieces: list[bytes]) -> list[codec.Packet]:
    out: list[codec.Packet] = []
    for piece in pieces:
        out += framer.feed(piece)
    return out


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def encode_connect(info: ConnectInfo) -> bytes:
    """The CONNECT body for ``info`` (the product never sends one, so the test encodes it)."""
    flags = 0x02 if info.clean_session else 0
    payload = _s(info.client_id)
    if info.will_topic is not None:
        flags |= 0x04 | (info.will_qos << 3) | (0x20 if info.will_retain else 0)
        payload += _s(info.will_topic) + _s(info.will_message or b"")
    if info.username is not None:
        flags |= 0x80
        payload += _s(info.username)
    if info.password is not None:
        flags |= 0x40
        payload += _s(info.password)
    return _s("MQTT") + bytes((4, flags)) + info.keep_alive.to_bytes(2, "big") + payload


@st.composite
def connects(draw: st.DrawFn) -> ConnectInfo:
    client_id = draw(mqtt_text)
    will = draw(st.booleans())
    username = draw(st.none() | mqtt_text)
    return ConnectInfo(
        protocol_name="MQTT",
        protocol_level=4,
        client_id=client_id,
        client_id_was_empty=not client_id,
        clean_session=draw(st.booleans()),
        keep_alive=draw(st.integers(0, 65535)),
        username=username,
        # [MQTT-3.1.2-22]: a password only with a user name; binary, any bytes.
        password=None if username is None else draw(st.none() | st.binary(max_size=40)),
        will_topic=draw(mqtt_text_nonempty) if will else None,
        will_message=draw(st.binary(max_size=40)) if will else None,
        will_qos=draw(st.integers(0, 2)) if will else 0,
        will_retain=draw(st.booleans()) if will else False,
    )


@dataclass
class Publish:
    topic: str
    payload: bytes
    qos: int
    pid: int
    retain: bool


publishes = st.builds(
    Publish,
    topic=mqtt_text,
    payload=st.binary(max_size=200),
    qos=st.integers(0, 2),
    pid=packet_id,
    retain=st.booleans(),
)


def _publish_bytes(p: Publish) -> bytes:
    return codec.encode_publish(p.topic, p.payload, p.qos, p.pid if p.qos else 0, p.retain)


def _subscribe_body(pid: int, filters: list[tuple[str, int]]) -> bytes:
    return pid.to_bytes(2, "big") + b"".join(_s(f) + bytes((q,)) for f, q in filters)


def _unsubscribe_body(pid: int, filters: list[str]) -> bytes:
    return pid.to_bytes(2, "big") + b"".join(_s(f) for f in filters)


DECODERS: list[Callable[[int, bytes], Any]] = [
    codec.decode_publish,
    decode_connect,
    decode_subscribe,
    decode_unsubscribe,
    lambda _flags, body: codec.decode_packet_id(body),
]


# --- the framer ------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=8))
@example(data=b"\x30\xff\xff\xff\xff\x7f", cuts=[])
def test_framer_on_arbitrary_bytes_raises_only_protocol_error(data: bytes, cuts: list[int]) -> None:
    whole: list[codec.Packet] | None
    try:
        whole = Framer(max_size=256).feed(data)
    except ProtocolError:
        whole = None
    try:
        split = _feed_all(Framer(max_size=256), _splits(data, cuts))
    except ProtocolError:
        split = None
    # How the bytes arrive changes nothing: the same packets, or a ProtocolError either way.
    if whole is None:
        assert split is None
    else:
        assert split == whole
        assert all(len(p.body) <= 256 for p in whole)


@FUZZ
@given(pkts=st.lists(publishes, min_size=1, max_size=6), cuts=st.lists(st.integers(0, 4000)))
def test_valid_publishes_split_anywhere_round_trip(pkts: list[Publish], cuts: list[int]) -> None:
    stream = b"".join(_publish_bytes(p) for p in pkts)
    got = _feed_all(Framer(), _splits(stream, cuts))
    assert [p.type for p in got] == [codec.PUBLISH] * len(pkts)
    for want, pkt in zip(pkts, got, strict=True):
        topic, qos, pid, retain, dup, payload = codec.decode_publish(pkt.flags, pkt.body)
        assert (topic, qos, retain, dup, payload) == (
            want.topic, want.qos, want.retain, False, want.payload
        )  # fmt: skip
        assert pid == (want.pid if want.qos else 0)


# --- the decoders ----------------------------------------------------------------------------


@FUZZ
@given(which=st.integers(0, len(DECODERS) - 1), flags=st.integers(0, 15), body=st.binary())
def test_decoders_on_arbitrary_bodies_raise_only_protocol_error(
    which: int, flags: int, body: bytes
) -> None:
    try:
        DECODERS[which](flags, body)
    except ProtocolError:
        pass


@st.composite
def mutated(draw: st.DrawFn) -> tuple[int, int, bytes]:
    """A valid body of one of the decoders, then truncated, extended or with bytes changed."""
    which = draw(st.integers(0, 3))
    if which == 0:
        p = draw(publishes)
        pkt = Framer().feed(_publish_bytes(p))[0]
        flags, body = pkt.flags, pkt.body
    elif which == 1:
        flags, body = 0, encode_connect(draw(connects()))
    elif which == 2:
        f = draw(st.lists(st.tuples(mqtt_text, st.integers(0, 2)), min_size=1, max_size=4))
        flags, body = 2, _subscribe_body(draw(packet_id), f)
    else:
        flags, body = 2, _unsubscribe_body(draw(packet_id), draw(st.lists(mqtt_text, max_size=4)))
    raw = bytearray(body)
    for _ in range(draw(st.integers(0, 3))):
        if raw:
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(raw)))
    raw = raw[:cut] + draw(st.binary(max_size=4))
    return which, flags, bytes(raw)


@FUZZ
@given(case=mutated())
def test_decoders_on_mutated_valid_bodies_raise_only_protocol_error(
    case: tuple[int, int, bytes],
) -> None:
    which, flags, body = case
    try:
        DECODERS[which](flags, body)
    except ProtocolError:
        pass


@FUZZ
@given(info=connects())
def test_connect_round_trips(info: ConnectInfo) -> None:
    assert decode_connect(0, encode_connect(info)) == info


@FUZZ
@given(pid=packet_id, filters=st.lists(st.tuples(mqtt_text, st.integers(0, 2)), min_size=1))
def test_subscribe_round_trips(pid: int, filters: list[tuple[str, int]]) -> None:
    assert decode_subscribe(2, _subscribe_body(pid, filters)) == (pid, filters)


@FUZZ
@given(pid=packet_id, filters=st.lists(mqtt_text, min_size=1))
def test_unsubscribe_round_trips(pid: int, filters: list[str]) -> None:
    assert decode_unsubscribe(2, _unsubscribe_body(pid, filters)) == (pid, filters)


@FUZZ
@given(ptype=st.sampled_from([codec.PUBACK, codec.PUBREC, codec.PUBCOMP, codec.UNSUBACK]),
       pid=st.integers(0, 65535))  # fmt: skip
def test_acks_round_trip(ptype: int, pid: int) -> None:
    (pkt,) = Framer().feed(codec.encode_ack(ptype, pid))
    assert (pkt.type, codec.decode_packet_id(pkt.body)) == (ptype, pid)


# --- regressions: crashes and lenient decodes found by the properties above ------------------


@pytest.mark.parametrize(
    ("decoder", "flags", "body"),
    [
        # Bad UTF-8 in a filter was decoded by amqtt as the text "b'\\xff'" [MQTT-1.5.3-1].
        (decode_subscribe, 2, b"\x00\x01\x00\x01\xff\x00"),
        (decode_unsubscribe, 2, b"\x00\x01\x00\x01\xff"),
        # U+0000 in a filter passed [MQTT-1.5.3-2].
        (decode_subscribe, 2, b"\x00\x01\x00\x01\x00\x00"),
        (decode_unsubscribe, 2, b"\x00\x01\x00\x01\x00"),
        # A filter without its QoS byte was silently dropped by amqtt.
        (decode_subscribe, 2, b"\x00\x01\x00\x01a"),
        # Packet identifier 0 [MQTT-2.3.1-1].
        (decode_subscribe, 2, b"\x00\x00\x00\x01a\x00"),
        # A requested QoS byte with reserved bits set [MQTT-3.8.3-4].
        (decode_subscribe, 2, b"\x00\x01\x00\x01a\x81"),
        # U+0000 in a PUBLISH topic [MQTT-1.5.3-2].
        (codec.decode_publish, 0, b"\x00\x03a\x00b"),
        # CONNECT: bytes after the last field; will flag without will topic/message.
        (decode_connect, 0, b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x01axx"),
        (decode_connect, 0, b"\x00\x04MQTT\x04\x06\x00\x3c\x00\x01a"),
    ],
)
def test_regression_malformed_is_a_protocol_error(
    decoder: Callable[[int, bytes], Any], flags: int, body: bytes
) -> None:
    with pytest.raises(ProtocolError):
        decoder(flags, body)


def test_topic_of_65535_bytes_round_trips() -> None:
    topic = "t/" + "x" * 65533
    pkt = Framer(max_size=1 << 20).feed(codec.encode_publish(topic, b"p", 1, 9))[0]
    assert codec.decode_publish(pkt.flags, pkt.body)[:3] == (topic, 1, 9)
    assert decode_subscribe(2, _subscribe_body(1, [(topic, 1)])) == (1, [(topic, 1)])


def test_binary_password_is_not_decoded() -> None:
    info = ConnectInfo("MQTT", 4, "c", username="u", password=b"\xff\x00\xfe")
    assert decode_connect(0, encode_connect(info)).password == b"\xff\x00\xfe"


@FUZZ
@given(first=st.integers(0, 255), body=st.binary(max_size=8))
def test_fixed_header_check_raises_only_protocol_error(first: int, body: bytes) -> None:
    try:
        codec.check_fixed_header(codec.Packet(first >> 4, first & 0x0F, body))
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    "raw",
    [b"\xc1\x00", b"\xe0\x01\x00", b"\xc0\x01\x00", b"\x41\x02\x00\x01", b"\x60\x02\x00\x01",
     b"\x80\x03\x00\x01\x00", b"\xa0\x02\x00\x01", b"\x18\x00"],
)  # fmt: skip
def test_mqtt_2_2_2_2_invalid_fixed_header_flags_are_a_protocol_error(raw: bytes) -> None:
    (pkt,) = Framer().feed(raw)
    with pytest.raises(ProtocolError):
        codec.check_fixed_header(pkt)


@pytest.mark.parametrize(
    "raw",
    [b"\xc0\x00", b"\xe0\x00", b"\x40\x02\x00\x01", b"\x62\x02\x00\x01", b"\x3d\x03\x00\x01a"],
)
def test_valid_fixed_header_flags_pass(raw: bytes) -> None:
    (pkt,) = Framer().feed(raw)
    codec.check_fixed_header(pkt)
