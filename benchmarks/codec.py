"""Minimal MQTT 3.1.1 and 5 codec for the load generator: pre-encoded packets and a fast parser.

Pure functions over ``bytes``; no sockets. Only what the generator needs: CONNECT (with or
without a username and password), SUBSCRIBE, PUBLISH (QoS 0/1/2), PUBACK, PUBREC/PUBREL/PUBCOMP,
DISCONNECT, and an incremental parser for whatever comes back.

MQTT 5 (``protocol=5``): the generator sends no properties, so its CONNECT, SUBSCRIBE and
PUBLISH carry an empty property block (``\x00``); what the broker sends may carry properties,
which the parsers skip. Its own acks stay 2 bytes, valid in MQTT 5 for reason code 0.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
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
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

MAX_REMAINING_LENGTH = 268_435_455

MQTT311 = 4  # protocol level of MQTT 3.1.1
MQTT5 = 5
PROTOCOLS = (MQTT311, MQTT5)
# An empty MQTT 5 property block: property length 0.
NO_PROPERTIES = b"\x00"

# Payload header: send timestamp (CLOCK_MONOTONIC ns, shared by all processes of the host)
# and a sequence number; the rest of the payload is padding.
PAYLOAD_HEADER = struct.Struct(">QQ")
PACKET_ID = struct.Struct(">H")


# Independent of ingress/codec.py on purpose: a load generator sharing the broker's codec
# would share its bugs, and the broker is measured against mosquitto with the same bytes.
def encode_remaining_length(n: int) -> bytes:
    """The MQTT variable-length integer (1 to 4 bytes) for a remaining length ``n``."""
    if n < 0 or n > MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length out of range: {n}")
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_remaining_length(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode a remaining length starting at ``buf[pos]``.

    Returns ``(value, bytes_used)``; ``bytes_used`` is 0 when ``buf`` does not hold it all yet.
    Raises ValueError on a length longer than 4 bytes.
    """
    value = 0
    mult = 1
    for i in range(4):
        if pos + i >= len(buf):
            return 0, 0
        byte = buf[pos + i]
        value += (byte & 0x7F) * mult
        if not byte & 0x80:
            return value, i + 1
        mult *= 128
    raise ValueError("malformed remaining length (more than 4 bytes)")


def _check_protocol(protocol: int) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"no such MQTT protocol level: {protocol}")


def _props(protocol: int) -> bytes:
    """The property block the generator sends: none in 3.1.1, an empty one in MQTT 5."""
    _check_protocol(protocol)
    return NO_PROPERTIES if protocol == MQTT5 else b""


def skip_properties(buf: bytes | bytearray | memoryview, pos: int) -> int:
    """The position after the MQTT 5 property block that starts at ``buf[pos]``.

    Raises ValueError when the property length is malformed or not all in ``buf``.
    """
    length, used = decode_remaining_length(buf, pos)
    if not used or pos + used + length > len(buf):
        raise ValueError("truncated MQTT 5 property block")
    return pos + used + length


def _utf8(s: str) -> bytes:
    raw = s.encode()
    return len(raw).to_bytes(2, "big") + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + encode_remaining_length(len(body)) + body


def encode_connect(
    client_id: str,
    keepalive: int = 60,
    clean_session: bool = True,
    username: str | None = None,
    password: bytes | None = None,
    protocol: int = MQTT311,
) -> bytes:
    """CONNECT without will for MQTT 3.1.1 (``protocol`` 4) or 5, optionally with a username
    and password; MQTT 5's carries no properties.

    In 3.1.1 a password needs a username ([MQTT-3.1.2-22]).
    """
    props = _props(protocol)
    if password is not None and username is None and protocol == MQTT311:
        raise ValueError("MQTT 3.1.1 allows a password only with a username")
    flags = 0x02 if clean_session else 0x00
    tail = b""
    if username is not None:
        flags |= 0x80
        tail += _utf8(username)
    if password is not None:
        flags |= 0x40
        tail += len(password).to_bytes(2, "big") + password  # binary data, not a UTF-8 string
    body = (
        _utf8("MQTT")
        + bytes([protocol, flags])
        + keepalive.to_bytes(2, "big")
        + props
        + _utf8(client_id)
    )
    return _packet(CONNECT << 4, body + tail)


def encode_subscribe(packet_id: int, topic_filter: str, qos: int, protocol: int = MQTT311) -> bytes:
    """SUBSCRIBE with one topic filter; in MQTT 5 with no properties and the subscription
    options byte = ``qos`` (no local, retain as published and retain handling all 0)."""
    body = packet_id.to_bytes(2, "big") + _props(protocol) + _utf8(topic_filter) + bytes([qos])
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def encode_puback(packet_id: int) -> bytes:
    """PUBACK for ``packet_id``."""
    return bytes([PUBACK << 4, 2]) + packet_id.to_bytes(2, "big")


def encode_ack(packet_type: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP for ``packet_id`` (PUBREL has flags 0010)."""
    if packet_type not in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        raise ValueError(f"not an acknowledgement packet type: {packet_type}")
    first = (packet_type << 4) | (0x02 if packet_type == PUBREL else 0)
    return bytes([first, 2]) + packet_id.to_bytes(2, "big")


def ack_reply(first_byte: int) -> int | None:
    """The packet type a client answers an incoming packet with, by its first byte.

    QoS 1 PUBLISH -> PUBACK, QoS 2 PUBLISH -> PUBREC, PUBREC -> PUBREL, PUBREL -> PUBCOMP;
    None for anything that needs no answer (QoS 0 PUBLISH, PUBACK, PUBCOMP, ...).
    """
    kind = first_byte >> 4
    if kind == PUBLISH:
        return {1: PUBACK, 2: PUBREC}.get((first_byte >> 1) & 3)
    if kind == PUBREC:
        return PUBREL
    if kind == PUBREL:
        return PUBCOMP
    return None


def encode_disconnect() -> bytes:
    """DISCONNECT."""
    return bytes([DISCONNECT << 4, 0])


def encode_pingreq() -> bytes:
    """PINGREQ."""
    return bytes([PINGREQ << 4, 0])


@dataclass(frozen=True)
class PublishTemplate:
    """A pre-encoded PUBLISH whose packet id and payload header are patched in place.

    ``packet`` is the full packet with packet id 0 and a zero payload header; the offsets say
    where to write the packet id (QoS 1 and 2, else -1) and the payload header.
    """

    packet: bytes
    packet_id_offset: int
    payload_offset: int

    @property
    def size(self) -> int:
        """Length of one encoded packet."""
        return len(self.packet)


def publish_template(
    topic: str, qos: int, payload_size: int = 100, protocol: int = MQTT311
) -> PublishTemplate:
    """Build the template for PUBLISH packets on ``topic`` with ``payload_size``-byte payloads.

    MQTT 5 (``protocol`` 5): an empty property block after the packet id, so the payload
    starts one byte later; :func:`fill_batch` patches by the offsets and needs no change.
    """
    if qos not in (0, 1, 2):
        raise ValueError(f"no such QoS: {qos}")
    if payload_size < PAYLOAD_HEADER.size:
        raise ValueError(f"payload must hold the {PAYLOAD_HEADER.size}-byte header")
    props = _props(protocol)
    variable = _utf8(topic)
    pid_len = 2 if qos else 0
    remaining = len(variable) + pid_len + len(props) + payload_size
    fixed = bytes([(PUBLISH << 4) | (qos << 1)]) + encode_remaining_length(remaining)
    packet_id_offset = len(fixed) + len(variable) if qos else -1
    payload_offset = len(fixed) + len(variable) + pid_len + len(props)
    payload = bytes(PAYLOAD_HEADER.size) + b"x" * (payload_size - PAYLOAD_HEADER.size)
    packet = fixed + variable + bytes(pid_len) + props + payload
    return PublishTemplate(packet, packet_id_offset, payload_offset)


def fill_batch(
    tpl: PublishTemplate,
    buf: bytearray,
    count: int,
    ts_ns: int,
    first_seq: int,
    first_packet_id: int,
) -> None:
    """Patch ``count`` consecutive packets of ``buf`` (a repeat of ``tpl.packet``).

    Every packet gets timestamp ``ts_ns`` and sequence numbers from ``first_seq``; for QoS 1/2 the
    packet ids run from ``first_packet_id`` and wrap from 65535 to 1.
    """
    size = tpl.size
    pack_header = PAYLOAD_HEADER.pack_into
    pay = tpl.payload_offset
    if tpl.packet_id_offset < 0:
        for i in range(count):
            pack_header(buf, pay + i * size, ts_ns, first_seq + i)
        return
    pack_pid = PACKET_ID.pack_into
    pid_off = tpl.packet_id_offset
    pid = first_packet_id
    for i in range(count):
        base = i * size
        pack_pid(buf, pid_off + base, pid)
        pack_header(buf, pay + base, ts_ns, first_seq + i)
        pid = pid + 1 if pid < 65535 else 1


def next_packet_id(packet_id: int, step: int) -> int:
    """The packet id ``step`` places after ``packet_id`` in the cycle 1..65535."""
    return (packet_id - 1 + step) % 65535 + 1


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int = 0,
    packet_id: int = 0,
    retain: bool = False,
    protocol: int = MQTT311,
) -> bytes:
    """A single PUBLISH packet (slow path; the hot path uses templates); MQTT 5's has no
    properties."""
    variable = _utf8(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + _props(protocol)
    first = (PUBLISH << 4) | (qos << 1) | (1 if retain else 0)
    return _packet(first, variable + payload)


@dataclass(frozen=True)
class Publish:
    """A parsed PUBLISH."""

    topic: str
    qos: int
    retain: bool
    dup: bool
    packet_id: int
    payload: bytes


def parse_publish(flags: int, body: bytes | memoryview, protocol: int = MQTT311) -> Publish:
    """Parse a PUBLISH body given the low nibble of its first byte; in MQTT 5 (``protocol``
    5) its properties are skipped."""
    _check_protocol(protocol)
    qos = (flags >> 1) & 0x03
    tlen = int.from_bytes(body[0:2], "big")
    topic = bytes(body[2 : 2 + tlen]).decode()
    pos = 2 + tlen
    packet_id = 0
    if qos:
        packet_id = int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
    if protocol == MQTT5:
        pos = skip_properties(body, pos)
    return Publish(topic, qos, bool(flags & 1), bool(flags & 8), packet_id, bytes(body[pos:]))


def split_packets(buf: bytearray) -> tuple[list[tuple[int, int, int]], int]:
    """Find the complete packets at the start of ``buf``.

    Returns ``([(first_byte, body_start, body_end), ...], consumed)``; the caller handles them
    and then deletes ``buf[:consumed]``. An incomplete trailing packet is left in place.
    """
    out: list[tuple[int, int, int]] = []
    pos = 0
    end = len(buf)
    while pos + 2 <= end:
        # Fast path: one-byte remaining length (every packet the generator receives but the
        # largest PUBLISH).
        second = buf[pos + 1]
        if second < 0x80:
            body_start = pos + 2
            body_end = body_start + second
        else:
            length, used = decode_remaining_length(buf, pos + 1)
            if not used:
                break
            body_start = pos + 1 + used
            body_end = body_start + length
        if body_end > end:
            break
        out.append((buf[pos], body_start, body_end))
        pos = body_end
    return out, pos


def payload_header(buf: bytes | bytearray, publish_body_start: int, qos: int) -> tuple[int, int]:
    """(timestamp_ns, seq) from an MQTT 3.1.1 PUBLISH body at ``publish_body_start`` in ``buf``."""
    tlen = (buf[publish_body_start] << 8) | buf[publish_body_start + 1]
    pos = publish_body_start + 2 + tlen + (2 if qos else 0)
    ts, seq = PAYLOAD_HEADER.unpack_from(buf, pos)
    return int(ts), int(seq)


def payload_header_v5(buf: bytes | bytearray, publish_body_start: int, qos: int) -> tuple[int, int]:
    """(timestamp_ns, seq) from an MQTT 5 PUBLISH body: as :func:`payload_header`, past the
    properties.

    A function of its own rather than a parameter, so the 3.1.1 hot loop keeps its one
    branch-free call; the generator picks one of the two per connection.
    """
    tlen = (buf[publish_body_start] << 8) | buf[publish_body_start + 1]
    pos = publish_body_start + 2 + tlen + (2 if qos else 0)
    plen = buf[pos]
    if plen < 0x80:  # fast path: a one-byte property length (always, for small blocks)
        pos += 1 + plen
    else:
        pos = skip_properties(buf, pos)
    ts, seq = PAYLOAD_HEADER.unpack_from(buf, pos)
    return int(ts), int(seq)


def payload_header_for(protocol: int) -> Callable[[bytes | bytearray, int, int], tuple[int, int]]:
    """The payload header reader for PUBLISH packets of ``protocol`` (4 or 5)."""
    _check_protocol(protocol)
    return payload_header_v5 if protocol == MQTT5 else payload_header


def suback_codes(body: bytes, protocol: int = MQTT311) -> bytes:
    """The return (3.1.1) or reason (5) codes of a SUBACK body: after the packet id and, in
    MQTT 5, its properties. 3.1.1 refuses with 0x80, MQTT 5 with any code >= 0x80."""
    _check_protocol(protocol)
    pos = 2
    if protocol == MQTT5:
        pos = skip_properties(body, pos)
    return body[pos:]
