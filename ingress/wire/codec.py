"""MQTT 3.1.1 framing and the hot packets, over ``bytes``/``memoryview``.

Hand-written rather than amqtt's stream readers: PUBLISH, PUBACK and PINGREQ are most of
the traffic, and decoding them without an ``await`` per field is what lets one process keep
up with the ingest target (DESIGN §8). The rare, intricate packets (CONNECT, SUBSCRIBE,
UNSUBSCRIBE) are decoded in :mod:`ingress.wire.control_packets`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

PINGRESP_BYTES = b"\xd0\x00"
_U16 = struct.Struct(">H")


class ProtocolError(Exception):
    """The peer broke MQTT (3.1.1 or 5); the connection is closed."""


class PacketTooLarge(ProtocolError):
    """A packet above the node's maximum packet size (MQTT 5: DISCONNECT 0x95)."""


@dataclass(slots=True)
class Packet:
    """One complete control packet: type, the fixed header's flag nibble, and the body."""

    type: int
    flags: int
    body: bytes


class Framer:
    """Incremental parser: feed bytes as they arrive, take whole packets out.

    Raises ProtocolError on a malformed remaining length or a packet (whole, fixed header
    included) above ``max_size``.
    """

    __slots__ = ("_buf", "max_size")

    def __init__(self, max_size: int = 1024 * 1024) -> None:
        self._buf = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> list[Packet]:
        """Append ``data``; return every packet now complete, in order."""
        buf = self._buf
        buf += data
        out: list[Packet] = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            first = buf[pos]
            # Remaining length: 1 to 4 bytes, 7 bits each, high bit = continuation.
            length = 0
            mult = 1
            i = pos + 1
            while True:
                if i >= n:
                    length = -1
                    break
                b = buf[i]
                length += (b & 0x7F) * mult
                i += 1
                if not b & 0x80:
                    break
                mult *= 128
                if mult > 128**3:
                    raise ProtocolError("remaining length longer than 4 bytes")
            if length < 0:
                break
            # MQTT 5's Maximum Packet Size is the whole packet (fixed header included,
            # §3.1.2.11.4), the size announced in CONNACK: checked as soon as the header is in.
            size = i - pos + length
            if size > self.max_size:
                raise PacketTooLarge(f"packet of {size} bytes exceeds the maximum {self.max_size}")
            end = i + length
            if end > n:
                break
            out.append(Packet(first >> 4, first & 0x0F, bytes(buf[i:end])))
            pos = end
        if pos:
            del buf[:pos]
        return out


def encode_remaining_length(length: int) -> bytes:
    """The variable-length encoding of a remaining length (MQTT 3.1.1 §2.2.3)."""
    if length < 0 or length > 268_435_455:
        raise ValueError(f"remaining length out of range: {length}")
    out = bytearray()
    while True:
        digit = length % 128
        length //= 128
        if length:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def decode_publish(flags: int, body: bytes) -> tuple[str, int, int, bool, bool, bytes]:
    """PUBLISH body → (topic, qos, packet_id, retain, dup, payload)."""
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    if len(body) < 2:
        raise ProtocolError("PUBLISH too short for a topic")
    tlen = _U16.unpack_from(body, 0)[0]
    end = 2 + tlen
    if end > len(body):
        raise ProtocolError("PUBLISH topic runs past the packet")
    try:
        topic = body[2:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("PUBLISH topic is not UTF-8") from exc  # [MQTT-1.5.3-1]
    if "\x00" in topic:
        raise ProtocolError("PUBLISH topic contains U+0000")  # [MQTT-1.5.3-2]
    pid = 0
    if qos:
        if end + 2 > len(body):
            raise ProtocolError("PUBLISH without a packet identifier")
        pid = _U16.unpack_from(body, end)[0]
        if pid == 0:
            raise ProtocolError("PUBLISH with packet identifier 0")
        end += 2
    return topic, qos, pid, bool(flags & 0x01), bool(flags & 0x08), body[end:]


def encode_publish(
    topic: str, payload: bytes, qos: int = 0, packet_id: int = 0, retain: bool = False
) -> bytes:
    """A whole PUBLISH packet."""
    t = topic.encode("utf-8")
    var = _U16.pack(len(t)) + t
    if qos:
        var += _U16.pack(packet_id)
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    return bytes((first,)) + encode_remaining_length(len(var) + len(payload)) + var + payload


def publish_parts(topic: str, payload: bytes, qos: int) -> tuple[bytes, bytes]:
    """Split a PUBLISH into (head up to the packet id, payload) for fan-out.

    Fan-out sends one record to many subscribers; only the packet id differs between them,
    so the head is encoded once and the id is spliced in per subscriber.
    """
    t = topic.encode("utf-8")
    var_len = 2 + len(t) + (2 if qos else 0)
    first = 0x30 | (qos << 1)
    head = bytes((first,)) + encode_remaining_length(var_len + len(payload)) + _U16.pack(len(t)) + t
    return head, payload


def encode_ack(packet_type: int, packet_id: int) -> bytes:
    """PUBACK/PUBREC/PUBREL/PUBCOMP/UNSUBACK: a type byte, length 2, the packet id."""
    first = (packet_type << 4) | (0x02 if packet_type == PUBREL else 0)
    return bytes((first, 2)) + _U16.pack(packet_id)


def encode_connack(return_code: int, session_present: bool = False) -> bytes:
    """CONNACK with the given return code."""
    return bytes((CONNACK << 4, 2, 1 if session_present else 0, return_code))


def encode_suback(packet_id: int, return_codes: list[int]) -> bytes:
    """SUBACK: one return code per requested filter (0x80 = failure)."""
    body = _U16.pack(packet_id) + bytes(return_codes)
    return bytes((SUBACK << 4,)) + encode_remaining_length(len(body)) + body


# Fixed-header flags each packet type must carry (PUBLISH's are its DUP, QoS and RETAIN).
_FIXED_FLAGS = {PUBREL: 0x02, SUBSCRIBE: 0x02, UNSUBSCRIBE: 0x02}


def check_fixed_header(pkt: Packet, v5: bool = False) -> None:
    """Raise ProtocolError if ``pkt``'s flags are not the ones its type fixes [MQTT-2.2.2-2].

    PINGREQ has no body, nor has DISCONNECT in MQTT 3.1.1 (in MQTT 5 it may carry a reason).
    """
    if pkt.type == PUBLISH:
        return
    expected = _FIXED_FLAGS.get(pkt.type, 0)
    if pkt.flags != expected:
        raise ProtocolError(f"packet type {pkt.type} with fixed-header flags {pkt.flags:04b}")
    if (pkt.type == PINGREQ or (pkt.type == DISCONNECT and not v5)) and pkt.body:
        raise ProtocolError(f"packet type {pkt.type} with a body of {len(pkt.body)} bytes")


def decode_packet_id(body: bytes) -> int:
    """The packet id of an ack packet (PUBACK and friends)."""
    if len(body) != 2:
        raise ProtocolError(f"ack packet with remaining length {len(body)}, expected 2")
    return int(_U16.unpack(body)[0])
