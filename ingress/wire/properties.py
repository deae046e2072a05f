"""MQTT 5.0 properties (OASIS MQTT 5.0 §2.2.2, table 2-4): identifiers, types, codec.

Pure functions over ``bytes``. A property block is a Variable Byte Integer length followed by
(identifier, value) pairs. :func:`decode_properties` checks everything that can be checked
without connection state: the identifier is known and allowed in the packet, values are well
encoded and in range, single-valued properties appear once. Two error classes let callers pick
the reason code: :class:`MalformedPacket` (0x81) for bytes that cannot be read as the spec's
types, plain :class:`~ingress.wire.codec.ProtocolError` (0x82) for a rule broken by readable
bytes.

Direction- and state-dependent rules (a client's PUBLISH must not carry a Subscription
Identifier [MQTT-3.3.4-6], Topic Alias above the maximum, Authentication Data without a
method...) are the caller's: they need to know who sent the packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

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
    encode_remaining_length,
)
from ingress.wire.validate import read_binary, utf8_string

# MQTT 5 adds AUTH; codec.py (3.1.1) has no constant for it.
AUTH = 15
# Will properties sit inside CONNECT's payload and allow other properties than CONNECT's own
# block, so they get a packet kind of their own; 16 cannot collide with a 4-bit packet type.
WILL = 16

PACKET_NAMES: dict[int, str] = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
    WILL: "will properties",
}


class MalformedPacket(ProtocolError):
    """The bytes cannot be read as MQTT 5 says (reason code 0x81, Malformed Packet)."""


class AliasError(ProtocolError):
    """A Topic Alias of 0 or above the maximum announced (DISCONNECT 0x94, §3.3.2.3.4)."""


# Property identifiers (table 2-4).
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

# Data types (§1.5). Plain ints: the decoder compares them once per property.
BYTE = 1
TWO_BYTE_INT = 2
FOUR_BYTE_INT = 4
VARIABLE_BYTE_INT = 5
UTF8_STRING = 6
BINARY_DATA = 7
UTF8_STRING_PAIR = 8

VARINT_MAX = 268_435_455  # the largest value four bytes of 7 bits hold (§1.5.5)
_TYPE_MAX = {BYTE: 0xFF, TWO_BYTE_INT: 0xFFFF, FOUR_BYTE_INT: 0xFFFF_FFFF}


class PropertySpec(NamedTuple):
    """One row of table 2-4, plus the value range the spec allows."""

    ident: int
    name: str  # the spec's name, for error messages
    attr: str  # the Properties attribute
    type: int
    packets: frozenset[int]
    lo: int = 0  # integer range [lo, hi]; ignored for strings and binary
    hi: int = 0xFFFF_FFFF
    flag: bool = False  # a 0/1 byte held as bool


def _spec(
    ident: int,
    name: str,
    type_: int,
    packets: set[int],
    lo: int = 0,
    hi: int | None = None,
    flag: bool = False,
) -> PropertySpec:
    attr = name.lower().replace(" ", "_")
    if hi is None:
        hi = 1 if flag else _TYPE_MAX.get(type_, VARINT_MAX)
    return PropertySpec(ident, name, attr, type_, frozenset(packets), lo, hi, flag)


_ACKS = {PUBACK, PUBREC, PUBREL, PUBCOMP}
_ALL = {CONNECT, CONNACK, PUBLISH, WILL, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH}

PROPERTIES: dict[int, PropertySpec] = {
    s.ident: s
    for s in (
        _spec(PAYLOAD_FORMAT_INDICATOR, "Payload Format Indicator", BYTE, {PUBLISH, WILL}, hi=1),
        _spec(MESSAGE_EXPIRY_INTERVAL, "Message Expiry Interval", FOUR_BYTE_INT, {PUBLISH, WILL}),
        _spec(CONTENT_TYPE, "Content Type", UTF8_STRING, {PUBLISH, WILL}),
        _spec(RESPONSE_TOPIC, "Response Topic", UTF8_STRING, {PUBLISH, WILL}),
        _spec(CORRELATION_DATA, "Correlation Data", BINARY_DATA, {PUBLISH, WILL}),
        _spec(
            SUBSCRIPTION_IDENTIFIER,
            "Subscription Identifier",
            VARIABLE_BYTE_INT,
            {PUBLISH, SUBSCRIBE},
            lo=1,
        ),
        _spec(
            SESSION_EXPIRY_INTERVAL,
            "Session Expiry Interval",
            FOUR_BYTE_INT,
            {CONNECT, CONNACK, DISCONNECT},
        ),
        _spec(ASSIGNED_CLIENT_IDENTIFIER, "Assigned Client Identifier", UTF8_STRING, {CONNACK}),
        _spec(SERVER_KEEP_ALIVE, "Server Keep Alive", TWO_BYTE_INT, {CONNACK}),
        _spec(
            AUTHENTICATION_METHOD, "Authentication Method", UTF8_STRING, {CONNECT, CONNACK, AUTH}
        ),
        _spec(AUTHENTICATION_DATA, "Authentication Data", BINARY_DATA, {CONNECT, CONNACK, AUTH}),
        _spec(
            REQUEST_PROBLEM_INFORMATION, "Request Problem Information", BYTE, {CONNECT}, flag=True
        ),
        _spec(WILL_DELAY_INTERVAL, "Will Delay Interval", FOUR_BYTE_INT, {WILL}),
        _spec(
            REQUEST_RESPONSE_INFORMATION,
            "Request Response Information",
            BYTE,
            {CONNECT},
            flag=True,
        ),
        _spec(RESPONSE_INFORMATION, "Response Information", UTF8_STRING, {CONNACK}),
        _spec(SERVER_REFERENCE, "Server Reference", UTF8_STRING, {CONNACK, DISCONNECT}),
        _spec(
            REASON_STRING,
            "Reason String",
            UTF8_STRING,
            {CONNACK, SUBACK, UNSUBACK, DISCONNECT, AUTH} | _ACKS,
        ),
        _spec(RECEIVE_MAXIMUM, "Receive Maximum", TWO_BYTE_INT, {CONNECT, CONNACK}, lo=1),
        _spec(TOPIC_ALIAS_MAXIMUM, "Topic Alias Maximum", TWO_BYTE_INT, {CONNECT, CONNACK}),
        _spec(TOPIC_ALIAS, "Topic Alias", TWO_BYTE_INT, {PUBLISH}, lo=1),
        _spec(MAXIMUM_QOS, "Maximum QoS", BYTE, {CONNACK}, hi=1),
        _spec(RETAIN_AVAILABLE, "Retain Available", BYTE, {CONNACK}, flag=True),
        _spec(USER_PROPERTY, "User Property", UTF8_STRING_PAIR, _ALL | _ACKS),
        _spec(MAXIMUM_PACKET_SIZE, "Maximum Packet Size", FOUR_BYTE_INT, {CONNECT, CONNACK}, lo=1),
        _spec(
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            "Wildcard Subscription Available",
            BYTE,
            {CONNACK},
            flag=True,
        ),
        _spec(
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            "Subscription Identifier Available",
            BYTE,
            {CONNACK},
            flag=True,
        ),
        _spec(
            SHARED_SUBSCRIPTION_AVAILABLE,
            "Shared Subscription Available",
            BYTE,
            {CONNACK},
            flag=True,
        ),
    )
}
# The two list-valued attributes are named in the plural.
PROPERTIES[USER_PROPERTY] = PROPERTIES[USER_PROPERTY]._replace(attr="user_properties")
PROPERTIES[SUBSCRIPTION_IDENTIFIER] = PROPERTIES[SUBSCRIPTION_IDENTIFIER]._replace(
    attr="subscription_identifiers"
)
# Each half of a User Property is encoded as a UTF-8 string.
_USER_PROPERTY_HALF = PROPERTIES[USER_PROPERTY]._replace(type=UTF8_STRING)
# Encoding order: identifier order, User Properties last (they keep their own order).
_ENCODE_ORDER = tuple(PROPERTIES[i] for i in sorted(PROPERTIES) if i != USER_PROPERTY)


@dataclass(slots=True)
class Properties:
    """The properties of one packet (or of a will); ``None``/empty = absent.

    Names are the spec's, in snake_case. 0/1 switches are ``bool``; Payload Format Indicator
    and Maximum QoS stay ``int`` (they are values, not switches).
    """

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    # Several in a PUBLISH to a client (one per matching subscription [MQTT-3.3.4-4]).
    subscription_identifiers: list[int] = field(default_factory=list)
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: bool | None = None
    will_delay_interval: int | None = None
    request_response_information: bool | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: bool | None = None
    # (name, value) in wire order, repeats allowed [MQTT-3.3.2-18].
    user_properties: list[tuple[str, str]] = field(default_factory=list)
    maximum_packet_size: int | None = None
    wildcard_subscription_available: bool | None = None
    subscription_identifier_available: bool | None = None
    shared_subscription_available: bool | None = None


def encode_varint(n: int) -> bytes:
    """A Variable Byte Integer (§1.5.5); ValueError outside 0..268,435,455."""
    return encode_remaining_length(n)


def decode_varint(body: bytes, pos: int) -> tuple[int, int]:
    """The Variable Byte Integer at ``pos`` → (value, next pos).

    MalformedPacket if it runs past ``body`` or is longer than 4 bytes. A non-minimal
    encoding ([MQTT-1.5.5-1] binds the sender) is accepted, not checked.
    """
    value = 0
    shift = 0
    n = len(body)
    while True:
        if pos >= n:
            raise MalformedPacket("Variable Byte Integer runs past the packet")
        b = body[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift == 28:
            raise MalformedPacket("Variable Byte Integer longer than 4 bytes")


def _where(spec: PropertySpec, packet: int) -> str:
    return f"{spec.name} in {PACKET_NAMES.get(packet, f'packet type {packet}')}"


def _string(block: bytes, i: int, spec: PropertySpec, packet: int) -> tuple[str, int]:
    # validate's readers raise plain ProtocolError; a string that cannot be read is a
    # Malformed Packet in MQTT 5 (§1.5.4), so re-raise as that.
    # spec.name, not _where(): the message is only formatted when something fails.
    raw, i = _binary(block, i, spec, packet)
    try:
        return utf8_string(raw, spec.name), i
    except ProtocolError as exc:
        raise MalformedPacket(f"{exc} (in {PACKET_NAMES.get(packet, packet)})") from exc


def _binary(block: bytes, i: int, spec: PropertySpec, packet: int) -> tuple[bytes, int]:
    try:
        return read_binary(block, i, spec.name)
    except ProtocolError as exc:
        raise MalformedPacket(f"{exc} (in {PACKET_NAMES.get(packet, packet)})") from exc


def decode_properties(body: bytes, pos: int, packet: int) -> tuple[Properties, int]:
    """The property block at ``pos`` of a ``packet`` (a packet type, or WILL) → (props, next pos).

    Always returns a fresh :class:`Properties` the caller may mutate: the empty case costs one
    small object, and a shared instance would be one ``.append`` away from corrupting every
    later packet. Raises MalformedPacket / ProtocolError as the module docstring says.
    """
    n = len(body)
    # Hot path: most PUBLISH packets carry no property, a single 0x00 length byte.
    if pos < n and body[pos] == 0:
        return Properties(), pos + 1
    length, pos = decode_varint(body, pos)
    end = pos + length
    if end > n:
        raise MalformedPacket(
            f"property length {length} runs {end - n} bytes past the "
            f"{PACKET_NAMES.get(packet, packet)} packet"
        )
    # One copy of the block, so every reader's bounds check is the block's end.
    block = body[pos:end]
    props = Properties()
    seen = 0  # bit i set once identifier i was read
    i = 0
    while i < length:
        ident = block[i]
        if ident & 0x80:  # identifiers are VBIs; every known one fits in one byte
            ident, i = decode_varint(block, i)
        else:
            i += 1
        spec = PROPERTIES.get(ident)
        if spec is None:
            raise MalformedPacket(f"unknown property identifier 0x{ident:02X}")
        if packet not in spec.packets:
            # §2.2.2.2: an identifier not valid for its packet type is a Malformed Packet.
            raise MalformedPacket(f"{_where(spec, packet)} is not allowed")
        type_ = spec.type
        if type_ == UTF8_STRING_PAIR:
            key, i = _string(block, i, spec, packet)
            value, i = _string(block, i, spec, packet)
            props.user_properties.append((key, value))  # repeats allowed, order kept
            continue
        bit = 1 << ident
        if seen & bit and not (ident == SUBSCRIPTION_IDENTIFIER and packet == PUBLISH):
            raise ProtocolError(f"{_where(spec, packet)} more than once")
        seen |= bit
        number: int
        if type_ == BYTE:
            if i >= length:
                raise MalformedPacket(f"{_where(spec, packet)}: truncated value")
            number = block[i]
            i += 1
        elif type_ == TWO_BYTE_INT:
            if i + 2 > length:
                raise MalformedPacket(f"{_where(spec, packet)}: truncated value")
            number = int.from_bytes(block[i : i + 2])
            i += 2
        elif type_ == FOUR_BYTE_INT:
            if i + 4 > length:
                raise MalformedPacket(f"{_where(spec, packet)}: truncated value")
            number = int.from_bytes(block[i : i + 4])
            i += 4
        elif type_ == VARIABLE_BYTE_INT:
            try:
                number, i = decode_varint(block, i)
            except MalformedPacket as exc:
                raise MalformedPacket(f"{_where(spec, packet)}: {exc}") from exc
        elif type_ == UTF8_STRING:
            text, i = _string(block, i, spec, packet)
            setattr(props, spec.attr, text)
            continue
        else:  # BINARY_DATA
            data, i = _binary(block, i, spec, packet)
            setattr(props, spec.attr, data)
            continue
        if not spec.lo <= number <= spec.hi:
            error = AliasError if ident == TOPIC_ALIAS else ProtocolError  # [MQTT-3.3.2-8]
            raise error(f"{_where(spec, packet)} has the invalid value {number}")
        if ident == SUBSCRIPTION_IDENTIFIER:
            props.subscription_identifiers.append(number)
        else:
            setattr(props, spec.attr, bool(number) if spec.flag else number)
    return props, end


def _encode_value(spec: PropertySpec, value: object, packet: int) -> bytes:
    type_ = spec.type
    if type_ == UTF8_STRING:
        assert isinstance(value, str)
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise ValueError(f"{_where(spec, packet)}: {len(raw)} bytes exceed 65535")
        return len(raw).to_bytes(2) + raw
    if type_ == BINARY_DATA:
        assert isinstance(value, bytes)
        if len(value) > 0xFFFF:
            raise ValueError(f"{_where(spec, packet)}: {len(value)} bytes exceed 65535")
        return len(value).to_bytes(2) + value
    assert isinstance(value, int)  # bool is an int
    number = int(value)
    if not spec.lo <= number <= spec.hi:
        raise ValueError(f"{_where(spec, packet)} has the invalid value {number}")
    if type_ == VARIABLE_BYTE_INT:
        return encode_varint(number)
    return number.to_bytes(type_)  # BYTE/TWO_BYTE_INT/FOUR_BYTE_INT are their byte widths


def encode_properties(props: Properties, packet: int) -> bytes:
    """Property length + the set properties of ``props`` for ``packet`` (a type, or WILL).

    Identifier order, User Properties last in their own order. ValueError if a set property
    is not allowed in ``packet`` or a value is out of range. The size of the block, for
    Maximum Packet Size checks, is ``len()`` of the result.
    """
    out = bytearray()
    for spec in _ENCODE_ORDER:
        value = getattr(props, spec.attr)
        if value is None or (spec.ident == SUBSCRIPTION_IDENTIFIER and not value):
            continue
        if packet not in spec.packets:
            raise ValueError(f"{_where(spec, packet)} is not allowed")
        if spec.ident == SUBSCRIPTION_IDENTIFIER:
            if len(value) > 1 and packet != PUBLISH:
                raise ValueError(f"{_where(spec, packet)} more than once")
            for sub_id in value:
                out.append(SUBSCRIPTION_IDENTIFIER)
                out += _encode_value(spec, sub_id, packet)
            continue
        out.append(spec.ident)
        out += _encode_value(spec, value, packet)
    if props.user_properties:
        spec = PROPERTIES[USER_PROPERTY]
        if packet not in spec.packets:
            raise ValueError(f"{_where(spec, packet)} is not allowed")
        for pair in props.user_properties:
            out.append(USER_PROPERTY)
            for text in pair:
                out += _encode_value(_USER_PROPERTY_HALF, text, packet)
    return encode_varint(len(out)) + out
