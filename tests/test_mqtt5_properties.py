"""MQTT 5 properties and reason codes, pure: bytes in, values out (and back)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress.wire import properties as p
from ingress.wire import reason_codes as rc
from ingress.wire.codec import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    ProtocolError,
)
from ingress.wire.properties import (
    AUTH,
    WILL,
    AliasError,
    MalformedPacket,
    Properties,
    PropertySpec,
    decode_properties,
    decode_varint,
    encode_properties,
    encode_varint,
)

PACKETS = [
    CONNECT,
    CONNACK,
    PUBLISH,
    PUBACK,
    PUBREC,
    PUBREL,
    PUBCOMP,
    SUBSCRIBE,
    SUBACK,
    UNSUBSCRIBE,
    UNSUBACK,
    DISCONNECT,
    AUTH,
    WILL,
]
SPECS = list(p.PROPERTIES.values())
LIST_ATTRS = {"user_properties", "subscription_identifiers"}


def block(*entries: bytes) -> bytes:
    """A property block: the length, then the raw (identifier, value) entries."""
    body = b"".join(entries)
    return encode_varint(len(body)) + body


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def mqtt_str(s: str) -> bytes:
    raw = s.encode("utf-8")
    return u16(len(raw)) + raw


def sample(spec: PropertySpec) -> Any:
    """A valid, non-trivial value of ``spec``'s type, as the Properties attribute holds it."""
    if spec.flag:
        return True
    value: Any = {
        p.BYTE: spec.hi,
        p.TWO_BYTE_INT: 300,
        p.FOUR_BYTE_INT: 70_000,
        p.VARIABLE_BYTE_INT: 200_000,
        p.UTF8_STRING: "ünï/⌘",
        p.BINARY_DATA: b"\x00\xff",
        p.UTF8_STRING_PAIR: ("k", "v"),
    }[spec.type]
    return [value] if spec.attr in LIST_ATTRS else value


def raw_entry(spec: PropertySpec) -> bytes:
    """One valid wire entry (identifier + value) of ``spec``."""
    value = sample(spec)
    return encode_properties(Properties(**{spec.attr: value}), next(iter(spec.packets)))[1:]


def decode_all(data: bytes, packet: int) -> Properties:
    props, pos = decode_properties(data, 0, packet)
    assert pos == len(data)
    return props


# --- Variable Byte Integer (§1.5.5) ------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_varint_edges(n: int, encoded: bytes) -> None:
    assert encode_varint(n) == encoded
    assert decode_varint(b"\xaa" + encoded + b"\xbb", 1) == (n, 1 + len(encoded))


def test_varint_of_five_bytes_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="longer than 4 bytes"):
        decode_varint(b"\xff\xff\xff\xff\x7f", 0)


def test_varint_truncated_is_malformed() -> None:
    with pytest.raises(MalformedPacket):
        decode_varint(b"\x80\x80", 0)


def test_varint_out_of_range_is_not_encoded() -> None:
    with pytest.raises(ValueError):
        encode_varint(268_435_456)
    with pytest.raises(ValueError):
        encode_varint(-1)


def test_non_minimal_varint_is_accepted() -> None:
    # [MQTT-1.5.5-1] binds the sender; the decoder does not police it (the brief's choice).
    assert decode_varint(b"\x80\x00", 0) == (0, 2)
    assert decode_properties(b"\x80\x00", 0, PUBLISH) == (Properties(), 2)


# --- The property block -------------------------------------------------------------------


def test_mqtt_2_2_2_1_no_properties_is_a_property_length_of_zero() -> None:
    assert encode_properties(Properties(), PUBLISH) == b"\x00"
    props, pos = decode_properties(b"\x00", 0, PUBLISH)
    assert props == Properties()
    assert pos == 1


def test_empty_result_is_fresh_and_mutable() -> None:
    a, _ = decode_properties(b"\x00", 0, PUBLISH)
    a.user_properties.append(("k", "v"))
    b, _ = decode_properties(b"\x00", 0, PUBLISH)
    assert b.user_properties == []


def test_decoding_starts_at_pos_and_stops_at_the_block_end() -> None:
    props = Properties(topic_alias=7)
    data = b"head" + encode_properties(props, PUBLISH) + b"payload"
    got, pos = decode_properties(data, 4, PUBLISH)
    assert got == props
    assert data[pos:] == b"payload"


def test_property_length_running_past_the_packet_is_malformed() -> None:
    data = encode_properties(Properties(topic_alias=7), PUBLISH)
    with pytest.raises(MalformedPacket, match="past"):
        decode_properties(data[:-1], 0, PUBLISH)


def test_missing_property_length_is_malformed() -> None:
    with pytest.raises(MalformedPacket):
        decode_properties(b"abc", 3, PUBLISH)


def test_property_length_of_five_bytes_is_malformed() -> None:
    with pytest.raises(MalformedPacket):
        decode_properties(b"\xff\xff\xff\xff\x7f", 0, PUBLISH)


def test_unknown_property_identifier_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="0x04"):
        decode_properties(block(b"\x04\x00"), 0, PUBLISH)


@pytest.mark.parametrize(
    ("spec", "packet"),
    [(s, k) for s in SPECS for k in PACKETS if k in s.packets],
    ids=lambda v: v.name if isinstance(v, PropertySpec) else p.PACKET_NAMES[v],
)
def test_every_property_round_trips_in_every_packet_it_is_allowed_in(
    spec: PropertySpec, packet: int
) -> None:
    props = Properties(**{spec.attr: sample(spec)})
    data = encode_properties(props, packet)
    assert data[1] == spec.ident
    assert decode_all(data, packet) == props


@pytest.mark.parametrize(
    ("spec", "packet"),
    [(s, k) for s in SPECS for k in PACKETS if k not in s.packets],
    ids=lambda v: v.name if isinstance(v, PropertySpec) else p.PACKET_NAMES[v],
)
def test_property_not_allowed_in_the_packet_is_malformed(spec: PropertySpec, packet: int) -> None:
    # §2.2.2.2: an Identifier not valid for its packet type is a Malformed Packet.
    with pytest.raises(MalformedPacket, match=spec.name):
        decode_properties(block(raw_entry(spec)), 0, packet)
    with pytest.raises(ValueError, match=spec.name):
        encode_properties(Properties(**{spec.attr: sample(spec)}), packet)


def test_table_2_4_packets_of_a_few_properties() -> None:
    assert p.PROPERTIES[p.WILL_DELAY_INTERVAL].packets == {WILL}
    assert p.PROPERTIES[p.SUBSCRIPTION_IDENTIFIER].packets == {PUBLISH, SUBSCRIBE}
    assert p.PROPERTIES[p.REASON_STRING].packets == {
        CONNACK,
        PUBACK,
        PUBREC,
        PUBREL,
        PUBCOMP,
        SUBACK,
        UNSUBACK,
        DISCONNECT,
        AUTH,
    }
    assert p.PROPERTIES[p.USER_PROPERTY].packets == set(PACKETS)


@pytest.mark.parametrize(
    "spec",
    [s for s in SPECS if s.attr not in LIST_ATTRS],
    ids=lambda s: s.name,
)
def test_single_valued_property_twice_is_a_protocol_error(spec: PropertySpec) -> None:
    # Each property's section says "It is a Protocol Error to include X more than once".
    entry = raw_entry(spec)
    with pytest.raises(ProtocolError, match=f"{spec.name}.*more than once") as exc:
        decode_properties(block(entry, entry), 0, next(iter(spec.packets)))
    assert type(exc.value) is ProtocolError


def test_subscription_identifier_twice_in_subscribe_is_a_protocol_error() -> None:
    entry = b"\x0b\x05"
    with pytest.raises(ProtocolError, match=r"Subscription Identifier.*more than once") as exc:
        decode_properties(block(entry, entry), 0, SUBSCRIBE)
    assert type(exc.value) is ProtocolError
    with pytest.raises(ValueError):
        encode_properties(Properties(subscription_identifiers=[1, 2]), SUBSCRIBE)


def test_mqtt_3_3_4_4_several_subscription_identifiers_in_a_publish() -> None:
    props = Properties(subscription_identifiers=[5, 1, 268_435_455, 5])
    data = encode_properties(props, PUBLISH)
    assert data == block(b"\x0b\x05", b"\x0b\x01", b"\x0b\xff\xff\xff\x7f", b"\x0b\x05")
    assert decode_all(data, PUBLISH) == props


def test_mqtt_3_3_2_18_user_property_order_and_repeats_kept() -> None:
    pairs = [("b", "1"), ("a", "2"), ("b", "1"), ("b", "3"), ("", "")]
    props = Properties(user_properties=pairs)
    for packet in (PUBLISH, PUBACK, DISCONNECT):
        assert decode_all(encode_properties(props, packet), packet).user_properties == pairs


def test_encoding_is_in_identifier_order_with_user_properties_last() -> None:
    props = Properties(
        user_properties=[("z", "1"), ("a", "2")],
        topic_alias=2,
        payload_format_indicator=1,
        content_type="t",
    )
    assert encode_properties(props, PUBLISH) == block(
        b"\x01\x01",
        b"\x03" + mqtt_str("t"),
        b"\x23" + u16(2),
        b"\x26" + mqtt_str("z") + mqtt_str("1"),
        b"\x26" + mqtt_str("a") + mqtt_str("2"),
    )


def test_any_order_on_the_wire_is_accepted() -> None:
    data = block(b"\x26" + mqtt_str("k") + mqtt_str("v"), b"\x23" + u16(9), b"\x01\x00")
    assert decode_all(data, PUBLISH) == Properties(
        payload_format_indicator=0, topic_alias=9, user_properties=[("k", "v")]
    )


def test_flags_decode_as_bool() -> None:
    props = decode_all(block(b"\x25\x00", b"\x28\x01"), CONNACK)
    assert props.retain_available is False
    assert props.wildcard_subscription_available is True


# --- Truncation and encoding errors: MalformedPacket ----------------------------------------


@pytest.mark.parametrize(
    "spec",
    [s for s in SPECS if s.type != p.UTF8_STRING_PAIR],
    ids=lambda s: s.name,
)
def test_truncated_value_is_malformed(spec: PropertySpec) -> None:
    entry = raw_entry(spec)
    with pytest.raises(MalformedPacket, match=spec.name):
        decode_properties(block(entry[:-1]), 0, next(iter(spec.packets)))


def test_truncated_user_property_is_malformed() -> None:
    entry = b"\x26" + mqtt_str("key") + mqtt_str("value")
    for cut in (1, 3, len(entry) - 1):
        with pytest.raises(MalformedPacket, match="User Property"):
            decode_properties(block(entry[:cut]), 0, PUBLISH)


def test_subscription_identifier_of_five_bytes_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="Subscription Identifier"):
        decode_properties(block(b"\x0b\xff\xff\xff\xff\x01"), 0, PUBLISH)


def test_mqtt_1_5_4_1_ill_formed_utf8_is_malformed() -> None:
    for bad in (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80"):  # invalid, overlong, surrogate
        with pytest.raises(MalformedPacket, match="Content Type"):
            decode_properties(block(b"\x03" + u16(len(bad)) + bad), 0, PUBLISH)


def test_mqtt_1_5_4_2_u0000_in_a_string_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="Reason String"):
        decode_properties(block(b"\x1f" + mqtt_str("a\x00b")), 0, PUBACK)


def test_mqtt_1_5_4_3_bom_is_kept() -> None:
    props = decode_all(block(b"\x08" + mqtt_str("\ufeffr/t")), PUBLISH)
    assert props.response_topic == "\ufeffr/t"


def test_mqtt_1_5_7_1_both_strings_of_a_user_property_are_checked() -> None:
    with pytest.raises(MalformedPacket, match="User Property"):
        decode_properties(block(b"\x26" + b"\x00\x01\xff" + mqtt_str("v")), 0, PUBLISH)
    with pytest.raises(MalformedPacket, match="User Property"):
        decode_properties(block(b"\x26" + mqtt_str("k") + mqtt_str("\x00")), 0, PUBLISH)


def test_binary_data_is_not_decoded() -> None:
    props = decode_all(block(b"\x09" + u16(3) + b"\xff\x00\xfe"), PUBLISH)
    assert props.correlation_data == b"\xff\x00\xfe"


# --- Values out of range: ProtocolError -----------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "packet", "name"),
    [
        (b"\x01\x02", PUBLISH, "Payload Format Indicator"),
        (b"\x01\xff", WILL, "Payload Format Indicator"),
        (b"\x24\x02", CONNACK, "Maximum QoS"),
        (b"\x17\x02", CONNECT, "Request Problem Information"),
        (b"\x19\x02", CONNECT, "Request Response Information"),
        (b"\x25\x02", CONNACK, "Retain Available"),
        (b"\x28\x02", CONNACK, "Wildcard Subscription Available"),
        (b"\x29\x02", CONNACK, "Subscription Identifier Available"),
        (b"\x2a\x02", CONNACK, "Shared Subscription Available"),
        (b"\x21\x00\x00", CONNECT, "Receive Maximum"),
        (b"\x21\x00\x00", CONNACK, "Receive Maximum"),
        (b"\x27\x00\x00\x00\x00", CONNECT, "Maximum Packet Size"),
        (b"\x0b\x00", PUBLISH, "Subscription Identifier"),
        (b"\x0b\x00", SUBSCRIBE, "Subscription Identifier"),
    ],
)
def test_value_out_of_range_is_a_protocol_error(entry: bytes, packet: int, name: str) -> None:
    with pytest.raises(ProtocolError, match=name) as exc:
        decode_properties(block(entry), 0, packet)
    assert type(exc.value) is ProtocolError


def test_mqtt_3_3_2_8_topic_alias_0_is_topic_alias_invalid() -> None:
    """A Topic Alias of 0: DISCONNECT 0x94 (AliasError), not a plain Protocol Error."""
    with pytest.raises(AliasError, match="Topic Alias"):
        decode_properties(block(b"\x23\x00\x00"), 0, PUBLISH)


@pytest.mark.parametrize(
    "props",
    [
        Properties(payload_format_indicator=2),
        Properties(topic_alias=0),
        Properties(subscription_identifiers=[0]),
        Properties(subscription_identifiers=[268_435_456]),
        Properties(message_expiry_interval=2**32),
        Properties(content_type="x" * 65_536),
    ],
)
def test_out_of_range_values_are_not_encoded(props: Properties) -> None:
    with pytest.raises(ValueError):
        encode_properties(props, PUBLISH)


def test_range_edges_are_accepted() -> None:
    props = Properties(receive_maximum=1, maximum_packet_size=1, topic_alias_maximum=0)
    assert decode_all(encode_properties(props, CONNECT), CONNECT) == props
    big = Properties(receive_maximum=65_535, maximum_packet_size=2**32 - 1)
    assert decode_all(encode_properties(big, CONNACK), CONNACK) == big


# --- Round trips of random Properties ---------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))


def _value(spec: PropertySpec) -> st.SearchStrategy[Any]:
    if spec.flag:
        return st.booleans()
    if spec.type == p.UTF8_STRING:
        return _TEXT
    if spec.type == p.BINARY_DATA:
        return st.binary()
    if spec.type == p.UTF8_STRING_PAIR:
        return st.lists(st.tuples(_TEXT, _TEXT))
    number = st.integers(spec.lo, spec.hi)
    if spec.attr == "subscription_identifiers":
        return st.lists(number, max_size=4)
    return number


@st.composite
def packet_and_props(draw: st.DrawFn) -> tuple[int, Properties]:
    packet = draw(st.sampled_from(PACKETS))
    values: dict[str, Any] = {}
    for spec in SPECS:
        if packet not in spec.packets or not draw(st.booleans()):
            continue
        value = draw(_value(spec))
        if spec.attr == "subscription_identifiers" and packet != PUBLISH:
            value = value[:1]
        values[spec.attr] = value
    return packet, Properties(**values)


@given(packet_and_props())
def test_random_properties_round_trip(case: tuple[int, Properties]) -> None:
    packet, props = case
    assert decode_all(encode_properties(props, packet), packet) == props


@given(st.binary(max_size=40), st.sampled_from(PACKETS))
def test_random_bytes_decode_or_raise_protocol_error(data: bytes, packet: int) -> None:
    try:
        props, pos = decode_properties(data, 0, packet)
    except ProtocolError:
        return
    assert pos <= len(data)
    # What decodes re-encodes to a block the decoder reads back the same.
    assert decode_all(encode_properties(props, packet), packet) == props


# --- Reason codes (§2.4) ----------------------------------------------------------------------


def test_reason_code_values() -> None:
    assert rc.SUCCESS == rc.NORMAL_DISCONNECTION == rc.GRANTED_QOS_0 == 0x00
    assert (rc.GRANTED_QOS_1, rc.GRANTED_QOS_2, rc.DISCONNECT_WITH_WILL) == (1, 2, 4)
    assert (rc.MALFORMED_PACKET, rc.PROTOCOL_ERROR) == (0x81, 0x82)
    assert rc.BANNED == 0x8A
    assert rc.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED == 0xA2


def test_valid_reason_codes_per_packet() -> None:
    assert set(rc.VALID) == {
        CONNACK,
        PUBACK,
        PUBREC,
        PUBREL,
        PUBCOMP,
        SUBACK,
        UNSUBACK,
        DISCONNECT,
        AUTH,
    }
    assert rc.VALID[PUBREL] == rc.VALID[PUBCOMP] == {0x00, 0x92}
    assert rc.VALID[AUTH] == {0x00, 0x18, 0x19}
    assert rc.VALID[PUBACK] == rc.VALID[PUBREC]
    assert rc.NO_MATCHING_SUBSCRIBERS in rc.VALID[PUBACK]
    assert rc.NO_SUBSCRIPTION_EXISTED in rc.VALID[UNSUBACK]
    assert rc.GRANTED_QOS_2 in rc.VALID[SUBACK]
    assert rc.GRANTED_QOS_2 not in rc.VALID[CONNACK]
    assert rc.DISCONNECT_WITH_WILL in rc.VALID[DISCONNECT]
    assert rc.SERVER_SHUTTING_DOWN not in rc.VALID[CONNACK]
    assert rc.BANNED not in rc.VALID[DISCONNECT]
    assert rc.MALFORMED_PACKET in rc.VALID[CONNACK] & rc.VALID[DISCONNECT]
    assert rc.MALFORMED_PACKET not in rc.VALID[PUBACK]
    # Every code from table 2-6 is valid somewhere.
    packet_types = {"CONNACK", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBACK", "UNSUBACK"}
    packet_types |= {"DISCONNECT", "AUTH"}
    codes = {
        v
        for k, v in vars(rc).items()
        if k.isupper() and isinstance(v, int) and k not in packet_types
    }
    assert codes == set().union(*rc.VALID.values())


def test_reason_code_names() -> None:
    assert rc.name(0x81) == "Malformed Packet"
    assert rc.name(0x00) == "Success"
    assert rc.name(0x00, DISCONNECT) == "Normal disconnection"
    assert rc.name(0x00, SUBACK) == "Granted QoS 0"
    assert rc.name(0x00, PUBACK) == "Success"
    assert rc.name(0x87, SUBACK) == "Not authorized"
    assert rc.name(0x03) == "unknown 0x03"
    for codes in rc.VALID.values():
        for code in codes:
            assert not rc.name(code).startswith("unknown")
