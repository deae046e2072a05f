"""MQTT 5.0 packets other than CONNECT: the variable headers with reason codes and properties.

The 3.1.1 encoders (:mod:`ingress.wire.codec`) stay as they are for 3.1.1 clients; a
connection that spoke MQTT 5 in its CONNECT uses these. Properties are read and written by
:mod:`ingress.wire.properties`; every decoder raises
:class:`~ingress.wire.properties.MalformedPacket` (0x81) or
:class:`~ingress.wire.codec.ProtocolError` (0x82) as MQTT 5 classes the fault.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ingress.wire.codec import (
    CONNACK,
    DISCONNECT,
    PUBLISH,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    ProtocolError,
    encode_remaining_length,
)
from ingress.wire.properties import (
    MalformedPacket,
    Properties,
    decode_properties,
    encode_properties,
)
from ingress.wire.validate import read_string, read_u16, utf8_string

_U16 = struct.Struct(">H")
# A property block with no property: its length, 0.
NO_PROPERTIES = b"\x00"

# SUBSCRIBE options byte (§3.8.3.1).
QOS_MASK = 0x03
NO_LOCAL = 0x04
RETAIN_AS_PUBLISHED = 0x08
RETAIN_HANDLING_SHIFT = 4
_OPTIONS_RESERVED = 0xC0


@dataclass(slots=True)
class Publish5:
    """A client's MQTT 5 PUBLISH."""

    topic: str
    qos: int
    packet_id: int
    retain: bool
    dup: bool
    # None: the PUBLISH has no property (most do; nothing is built for them).
    properties: Properties | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class Subscription5:
    """One topic filter of a SUBSCRIBE with its options."""

    topic_filter: str
    qos: int
    no_local: bool
    retain_as_published: bool
    retain_handling: int


def _block(props: Properties | None, packet: int) -> bytes:
    return NO_PROPERTIES if props is None else encode_properties(props, packet)


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_remaining_length(len(body)) + body


def decode_publish5(flags: int, body: bytes) -> Publish5:
    """PUBLISH body of an MQTT 5 client (topic, packet id, properties, payload)."""
    # On the hot path, as codec.decode_publish: no per-field helper calls.
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
    if qos == 0 and flags & 0x08:
        raise MalformedPacket("QoS 0 PUBLISH with DUP set")  # [MQTT-3.3.1-2]
    n = len(body)
    if n < 2:
        raise MalformedPacket("PUBLISH too short for a topic")
    pos = 2 + ((body[0] << 8) | body[1])
    if pos > n:
        raise MalformedPacket("PUBLISH topic runs past the packet")
    try:
        topic = body[2:pos].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket("PUBLISH topic is not UTF-8") from exc  # [MQTT-1.5.4-1]
    if "\x00" in topic:
        raise MalformedPacket("PUBLISH topic contains U+0000")  # [MQTT-1.5.4-2]
    pid = 0
    if qos:
        if pos + 2 > n:
            raise MalformedPacket("PUBLISH without a packet identifier")
        pid = (body[pos] << 8) | body[pos + 1]
        if pid == 0:
            raise ProtocolError("PUBLISH with packet identifier 0")  # [MQTT-2.2.1-3]
        pos += 2
    props: Properties | None = None
    if pos < n and body[pos] == 0:
        pos += 1
    else:
        props, pos = decode_properties(body, pos, PUBLISH)
    return Publish5(topic, qos, pid, bool(flags & 0x01), bool(flags & 0x08), props, body[pos:])


def publish5_head(topic: bytes, qos: int, props: bytes, payload_len: int) -> tuple[bytes, bytes]:
    """An MQTT 5 PUBLISH as (fixed header + topic, properties block + nothing): the packet id
    (QoS 1/2) goes between the two, the payload after; ``props`` is an encoded block."""
    var_len = 2 + len(topic) + (2 if qos else 0) + len(props)
    first = 0x30 | (qos << 1)
    head = bytes((first,)) + encode_remaining_length(var_len + payload_len)
    return head + _U16.pack(len(topic)) + topic, props


def encode_publish5(
    topic: str,
    payload: bytes,
    qos: int,
    packet_id: int,
    retain: bool,
    props: bytes = NO_PROPERTIES,
    dup: bool = False,
) -> bytes:
    """A whole MQTT 5 PUBLISH; ``props`` is an encoded property block."""
    head, block = publish5_head(topic.encode("utf-8"), qos, props, len(payload))
    first = head[0] | (0x01 if retain else 0) | (0x08 if dup else 0)
    pid = _U16.pack(packet_id) if qos else b""
    return bytes((first,)) + head[1:] + pid + block + payload


def encode_connack5(code: int, session_present: bool, props: Properties) -> bytes:
    """CONNACK: acknowledge flags, reason code, properties."""
    body = bytes((1 if session_present else 0, code)) + encode_properties(props, CONNACK)
    return _packet(CONNACK << 4, body)


def encode_ack5(
    packet_type: int, packet_id: int, code: int = 0, reason: str | None = None
) -> bytes:
    """PUBACK/PUBREC/PUBREL/PUBCOMP; the reason code and properties are left out when the
    code is 0x00 and there is nothing to say (§3.4.2.1), as 3.1.1's two-byte form."""
    first = (packet_type << 4) | (0x02 if packet_type == PUBREL else 0)
    if code == 0 and reason is None:
        return bytes((first, 2)) + _U16.pack(packet_id)
    props = NO_PROPERTIES if reason is None else _reason_block(reason, packet_type)
    return _packet(first, _U16.pack(packet_id) + bytes((code,)) + props)


def decode_ack5(body: bytes, packet_type: int) -> tuple[int, int]:
    """PUBACK/PUBREC/PUBREL/PUBCOMP of an MQTT 5 client → (packet id, reason code)."""
    if len(body) == 2:  # success, no properties: what nearly every ack is
        return (body[0] << 8) | body[1], 0
    pid, pos = read_u16(body, 0, "acknowledgement packet identifier")
    if pos == len(body):
        return pid, 0
    code = body[pos]
    if pos + 1 < len(body):
        _, end = decode_properties(body, pos + 1, packet_type)
        if end != len(body):
            raise MalformedPacket("bytes after the acknowledgement's properties")
    return pid, code


def encode_suback5(packet_id: int, codes: list[int], reason: str | None = None) -> bytes:
    """SUBACK: packet id, properties, one reason code per filter."""
    props = NO_PROPERTIES if reason is None else _reason_block(reason, SUBACK)
    return _packet(SUBACK << 4, _U16.pack(packet_id) + props + bytes(codes))


def encode_unsuback5(packet_id: int, codes: list[int]) -> bytes:
    """UNSUBACK: packet id, no properties, one reason code per filter."""
    return _packet(UNSUBACK << 4, _U16.pack(packet_id) + NO_PROPERTIES + bytes(codes))


def encode_disconnect5(code: int, reason: str | None = None) -> bytes:
    """A server's DISCONNECT with its reason code (and reason string)."""
    if code == 0 and reason is None:
        return bytes((DISCONNECT << 4, 0))
    props = NO_PROPERTIES if reason is None else _reason_block(reason, DISCONNECT)
    return _packet(DISCONNECT << 4, bytes((code,)) + props)


def decode_disconnect5(body: bytes) -> tuple[int, Properties]:
    """A client's DISCONNECT → (reason code, properties); an empty body is 0x00."""
    if not body:
        return 0, Properties()
    code = body[0]
    if len(body) == 1:
        return code, Properties()
    props, end = decode_properties(body, 1, DISCONNECT)
    if end != len(body):
        raise MalformedPacket("bytes after DISCONNECT's properties")
    return code, props


def decode_subscribe5(body: bytes) -> tuple[int, Properties, list[Subscription5]]:
    """SUBSCRIBE of an MQTT 5 client → (packet id, properties, subscriptions)."""
    pid, props, pos = _head(body, SUBSCRIBE, "SUBSCRIBE")
    subs: list[Subscription5] = []
    while pos < len(body):
        filt, pos = _string(body, pos, "SUBSCRIBE topic filter")
        if pos >= len(body):
            raise MalformedPacket("SUBSCRIBE topic filter without its options byte")
        opts = body[pos]
        pos += 1
        if opts & _OPTIONS_RESERVED:
            raise MalformedPacket(f"SUBSCRIBE options {opts:#04x}: reserved bits set")
        qos = opts & QOS_MASK
        if qos == 3:
            raise MalformedPacket("SUBSCRIBE with QoS 3")
        handling = opts >> RETAIN_HANDLING_SHIFT
        if handling == 3:
            raise ProtocolError("SUBSCRIBE with retain handling 3")
        subs.append(
            Subscription5(
                filt, qos, bool(opts & NO_LOCAL), bool(opts & RETAIN_AS_PUBLISHED), handling
            )
        )
    if not subs:
        raise ProtocolError("SUBSCRIBE with no topic filter")  # [MQTT-3.8.3-2]
    return pid, props, subs


def decode_unsubscribe5(body: bytes) -> tuple[int, list[str]]:
    """UNSUBSCRIBE of an MQTT 5 client → (packet id, filters); its properties are read (and
    checked) but carry only user properties, which Bayou does not use."""
    pid, _, pos = _head(body, UNSUBSCRIBE, "UNSUBSCRIBE")
    filters: list[str] = []
    while pos < len(body):
        filt, pos = _string(body, pos, "UNSUBSCRIBE topic filter")
        filters.append(filt)
    if not filters:
        raise ProtocolError("UNSUBSCRIBE with no topic filter")  # [MQTT-3.10.3-2]
    return pid, filters


def _head(body: bytes, packet: int, name: str) -> tuple[int, Properties, int]:
    """The packet id (not 0) and properties that start a SUBSCRIBE or UNSUBSCRIBE."""
    pid, pos = read_u16(body, 0, f"{name} packet identifier")
    if pid == 0:
        raise MalformedPacket(f"{name} with packet identifier 0")
    props, pos = decode_properties(body, pos, packet)
    return pid, props, pos


def _string(body: bytes, pos: int, what: str) -> tuple[str, int]:
    # A string that cannot be read is a Malformed Packet in MQTT 5 (§1.5.4).
    try:
        return read_string(body, pos, what)
    except ProtocolError as exc:
        raise MalformedPacket(str(exc)) from exc


# Reason strings are for people: a few hundred characters say enough, and a client's own
# input quoted in one (a bad value) must not make the packet too large to encode.
REASON_MAX = 256


def _reason_block(reason: str, packet: int) -> bytes:
    reason = reason[:REASON_MAX]
    return encode_properties(
        Properties(reason_string=utf8_string(reason.encode(), "reason")), packet
    )
